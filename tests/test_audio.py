"""Audio loading: formats, resampling, mono, trimming, and errors that name the file."""

import re

import numpy as np
import pytest
import soundfile

from jaxslm.errors import JaxslmError
from jaxslm.speech.audio import audio_seconds, load_audio


def sine(sample_rate: int, seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(sample_rate * seconds)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_wav_at_16k_is_returned_unchanged(tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, sine(16000), 16000, subtype="FLOAT")
    waveform = load_audio(path)
    assert waveform.dtype == np.float32 and waveform.ndim == 1 and waveform.flags.c_contiguous
    np.testing.assert_array_equal(waveform, sine(16000))
    assert audio_seconds(path) == 1.0


def test_flac_and_stereo_average_to_mono(tmp_path):
    soundfile.write(tmp_path / "a.flac", sine(16000), 16000)  # 16-bit PCM
    np.testing.assert_allclose(load_audio(tmp_path / "a.flac"), sine(16000), atol=1e-4)
    stereo = np.stack([sine(16000), 0.5 * sine(16000)], axis=1)
    soundfile.write(tmp_path / "stereo.wav", stereo, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "stereo.wav"), 0.75 * sine(16000), atol=1e-7)


@pytest.mark.parametrize("rate", [8000, 44100])
def test_resampled_to_16k(tmp_path, rate):
    """The known sine at 16 kHz, away from the edges where the resampling filter rings."""
    path = tmp_path / f"s{rate}.wav"
    soundfile.write(path, sine(rate, seconds=0.5), rate, subtype="FLOAT")
    waveform = load_audio(path)
    assert waveform.shape == (8000,) and waveform.dtype == np.float32
    np.testing.assert_allclose(waveform[200:-200], sine(16000, 0.5)[200:-200], atol=1e-5)
    assert audio_seconds(path) == 0.5
    assert load_audio(path, sample_rate=rate).shape == (rate // 2,)


@pytest.mark.parametrize("fmt", ["MP3", "OGG"])
def test_lossy_formats(tmp_path, fmt):
    if fmt not in soundfile.available_formats():
        pytest.skip(f"this libsndfile ({soundfile.__libsndfile_version__}) cannot write {fmt}")
    path = tmp_path / f"a.{fmt.lower()}"
    soundfile.write(path, sine(16000), 16000)
    waveform = load_audio(path)
    assert waveform.shape == (16000,) and waveform.dtype == np.float32
    assert np.corrcoef(waveform[2000:14000], sine(16000)[2000:14000])[0, 1] > 0.999
    assert audio_seconds(path) == pytest.approx(1.0, abs=0.05)


def test_trimming_removes_leading_and_trailing_silence(tmp_path):
    silence = np.zeros(8000, np.float32)
    path = tmp_path / "padded.wav"
    padded = np.concatenate([silence, sine(16000), silence])
    soundfile.write(path, padded, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), padded)
    trimmed = load_audio(path, trim_silence=True)
    # librosa keeps every 2048-sample frame (512 hop) that touches the tone: <= 1024 more a side
    assert 16000 <= len(trimmed) <= 16000 + 2 * 1024
    assert np.count_nonzero(trimmed) == np.count_nonzero(padded)


def bad_files(directory):
    corrupt = directory / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    text = directory / "notes.wav"
    text.write_text("this is a text file, not audio\n")
    empty = directory / "empty.wav"
    empty.write_bytes(b"")
    silent = directory / "no_samples.wav"
    soundfile.write(silent, np.zeros(0, np.float32), 16000)
    return {
        corrupt: "cannot decode audio .libsndfile: Format not recognised",
        text: "cannot decode audio .libsndfile: Format not recognised",
        empty: "empty file",
        silent: "no audio samples",
        directory / "missing.wav": "no such audio file",
    }


def test_bad_files_raise_naming_the_file_quietly(tmp_path, recwarn):
    for path, reason in bad_files(tmp_path).items():
        with pytest.raises(JaxslmError, match=reason) as raised:
            load_audio(path)
        assert str(path) in str(raised.value)
    assert not recwarn.list  # librosa's and audioread's fallback warnings are filtered


def test_audio_seconds_refuses_unreadable_files(tmp_path):
    files = bad_files(tmp_path)
    for path in [p for p in files if p.name != "no_samples.wav"]:
        with pytest.raises(JaxslmError, match=re.escape(str(path))):
            audio_seconds(path)
    assert audio_seconds(tmp_path / "no_samples.wav") == 0.0
