"""Audio files as 16 kHz mono float32 waveforms, with errors that name the file and the reason."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import librosa
import numpy as np
import soundfile

from jaxslm.errors import JaxslmError

SAMPLE_RATE = 16000
FORMATS_HINT = "expected wav, flac, mp3 or ogg (other formats need ffmpeg for audioread)"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence librosa's fallback notices and audioread's import-time deprecations."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _checked_path(path: str | os.PathLike) -> Path:
    """`path` as a Path, refusing a missing file, a directory or a 0-byte file."""
    path = Path(path)
    if not path.exists():
        raise JaxslmError(f"{path}: no such audio file")
    if not path.is_file():
        raise JaxslmError(f"{path}: is not a file; pass an audio file")
    if path.stat().st_size == 0:
        raise JaxslmError(f"{path}: empty file (0 bytes); re-export or remove it")
    return path


def _undecodable(path: Path, error: Exception) -> JaxslmError:
    """An error saying why neither libsndfile nor audioread could decode `path`."""
    try:
        soundfile.info(path)
        libsndfile = "read the header, decoding failed"
    except soundfile.LibsndfileError as sf_error:
        libsndfile = sf_error.error_string.rstrip(".")
    except Exception as sf_error:  # any reason is worth reporting
        libsndfile = str(sf_error) or type(sf_error).__name__
    fallback = str(error) or "no backend could read it"
    return JaxslmError(
        f"{path}: cannot decode audio (libsndfile: {libsndfile}; "
        f"{type(error).__name__}: {fallback}); {FORMATS_HINT}"
    )


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    trim_silence: bool = False,
    top_db: float = 60.0,
) -> np.ndarray:
    """Decode `path` to mono float32 at `sample_rate` Hz (channels averaged, soxr_hq resampling).

    With `trim_silence`, leading and trailing frames quieter than `top_db` dB below the loudest
    frame are cut (librosa.effects.trim, 2048-sample frames, 512-sample hop).
    """
    path = _checked_path(path)
    if sample_rate <= 0:
        raise JaxslmError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    with _quiet():
        try:
            waveform, _ = librosa.load(path, sr=sample_rate, mono=True, dtype=np.float32)
        except Exception as error:  # decoders raise many types; all mean "not readable audio"
            raise _undecodable(path, error) from error
        if waveform.size == 0:
            raise JaxslmError(f"{path}: the file holds no audio samples; re-export or remove it")
        if trim_silence:
            waveform, _ = librosa.effects.trim(waveform, top_db=top_db)
    return np.ascontiguousarray(waveform, dtype=np.float32)


def audio_seconds(path: str | os.PathLike) -> float:
    """Duration of `path` in seconds from its header when possible (no full decode)."""
    path = _checked_path(path)
    with _quiet():
        try:
            return float(librosa.get_duration(path=path))
        except Exception as error:  # same decoders as load_audio
            raise _undecodable(path, error) from error
