"""Unit lines (of `python -m jaxslm.generate` or `tokenize_audio`) to wav files.

A line gives its units as `units` (a list of ids) or `units_str` (ids separated by spaces, the
textless/fairseq code format), optionally `duration` (frames per unit). Its wav is named after
`file_name` (tokenize_audio: the audio's relative path, suffix `.wav`) or after `prompt` and
`sample` (generate: `<prompt>-<sample>.wav`), with characters other than letters, digits and
`._-/` replaced by `_`. Each wav is written to a staging file and renamed into place, as
32-bit float WAV at the vocoder's sample rate (as slamkit's torchaudio.save writes them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.speech.vocoder import Vocoder

DURATION_MODES = ("auto", "predict", "file", "once")
MANIFEST = "manifest.jsonl"
ERRORS = "errors.jsonl"
CHUNK_LINES = 32
_UNSAFE = re.compile(r"[^A-Za-z0-9._/-]")
_AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


@dataclass(frozen=True)
class UnitLine:
    """One line to vocode: its wav's relative name, units and recorded durations."""

    wav: str
    units: np.ndarray
    durations: np.ndarray | None
    origin: str


def wav_name(record: dict[str, Any]) -> str:
    """The relative wav path for a line (see the module docstring)."""
    if isinstance(record.get("file_name"), str) and record["file_name"]:
        base = record["file_name"]
    elif isinstance(record.get("prompt"), str) and record["prompt"]:
        base = f"{_strip_audio_suffix(record['prompt'])}-{int(record.get('sample', 0))}"
    else:
        raise JaxslmError("no 'file_name' (tokenize_audio) or 'prompt' (generate) to name it")
    parts = [p for p in PurePosixPath(_strip_audio_suffix(base)).parts if p not in ("/", ".")]
    if not parts or ".." in parts:
        raise JaxslmError(f"the name {base!r} does not give a path inside the output folder")
    return _UNSAFE.sub("_", "/".join(parts))[:200] + ".wav"


def _strip_audio_suffix(name: str) -> str:
    path = PurePosixPath(name)
    return str(path.with_suffix("")) if path.suffix.lower() in _AUDIO_SUFFIXES else name


def parse_line(record: Any, origin: str) -> UnitLine:
    """A UnitLine from a parsed JSON line, or a JaxslmError saying what is wrong with it."""
    if not isinstance(record, dict):
        raise JaxslmError("not a JSON object")
    if "units" in record:
        units = record["units"]
    elif isinstance(record.get("units_str"), str):
        try:
            units = [int(u) for u in record["units_str"].split()]
        except ValueError:
            raise JaxslmError("'units_str' must be integers separated by spaces") from None
    else:
        raise JaxslmError("no 'units' or 'units_str'")
    units = _int_list(units, "units")
    durations = record.get("duration")
    if durations is not None:
        durations = _int_list(durations, "duration")
        if durations.size != units.size or (durations.size and durations.min() < 1):
            raise JaxslmError("'duration' needs one positive frame count per unit")
    return UnitLine(wav_name(record), units, durations, origin)


def _int_list(value: Any, field: str) -> np.ndarray:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise JaxslmError(f"'{field}' must be a list of integers")
    return np.asarray(value, np.int64)


def write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    """`wave` as a 32-bit float WAV at `path`, staged and renamed into place."""
    import soundfile

    from jaxslm.fsutil import atomic_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as staging:
        soundfile.write(staging, wave, sample_rate, format="WAV", subtype="FLOAT")


def frames_per_unit(vocoder: Vocoder, lines: Sequence[UnitLine], mode: str) -> list | None:
    """The durations `vocoder.vocode` takes for `lines` under `--durations mode`."""
    if mode not in DURATION_MODES:
        raise JaxslmError(f"--durations {mode!r}: use one of {', '.join(DURATION_MODES)}")
    if mode == "predict" and not vocoder.has_duration_predictor:
        raise JaxslmError(f"--durations predict: vocoder {vocoder.name} has no duration predictor")
    if mode == "file":
        return [line.durations for line in lines]
    if mode == "once":
        return [np.ones(line.units.size, np.int64) for line in lines]
    return None  # auto / predict: the predictor when there is one, else one frame per unit


def check_request(
    vocoder: Vocoder, durations: str, speaker: str | int, style: str | int
) -> tuple[int, int]:
    """The speaker and style ids of `vocoder`, refusing those it lacks and a --durations mode
    it cannot run."""
    speaker_id = vocoder.speaker_id(speaker, "speaker")
    style_id = vocoder.speaker_id(style, "style")
    frames_per_unit(vocoder, [], durations)
    return speaker_id, style_id


def vocode_file(
    units_file: Path,
    vocoder_loader,
    out_dir: Path,
    durations: str = "auto",
    speaker: str | int = 0,
    style: str | int = 0,
    progress: bool = True,
) -> dict[str, int]:
    """Write a wav into `out_dir` for each line of `units_file` not yet in its manifest;
    resumable (see `python -m jaxslm.vocode --help`). `vocoder_loader()` is called, and the
    vocoder checked against `durations`, `speaker` and `style`, before `out_dir` is made on a
    first run, and on a later run only when a line is left to vocode. Returns counts."""
    from jaxslm.resumable_jsonl import ResumableJsonl, report_errors, started
    from jaxslm.textfiles import read_utf8

    text = read_utf8(units_file, "units JSONL")
    errors: list[dict] = []
    lines: list[UnitLine] = []
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        origin = f"{units_file}:{number}"
        try:
            line = parse_line(json.loads(raw), origin)
            if line.wav in names:
                raise JaxslmError(f"a second line for {line.wav}")
        except (ValueError, JaxslmError) as error:
            reason = f"not JSON ({error})" if isinstance(error, ValueError) else str(error)
            errors.append({"line": origin, "error": reason})
            continue
        if durations == "file" and line.durations is None:
            raise JaxslmError(
                f"{origin}: --durations file, but this line has no 'duration' (frames per "
                "unit, as tokenize_audio writes); use --durations auto or once for lines "
                "without durations"
            )
        names.add(line.wav)
        lines.append(line)
    if not lines and not errors:
        raise JaxslmError(f"--units {units_file}: no lines")
    vocoder = None
    if lines and not started(out_dir / MANIFEST):
        # a first run has every line to do: load and check the vocoder before out_dir exists
        vocoder = vocoder_loader()
        check_request(vocoder, durations, speaker, style)
    with ResumableJsonl(out_dir / MANIFEST) as manifest:
        todo = [line for line in lines if line.wav not in manifest.done]
        written = 0
        if todo:
            written = _vocode_into(
                manifest,
                todo,
                vocoder_loader() if vocoder is None else vocoder,
                out_dir,
                durations,
                speaker,
                style,
                progress,
                errors,
            )
        errors_path = out_dir / ERRORS
        report_errors(errors_path, errors, "line(s) skipped")
        manifest.commit()
    return {
        "lines": len(lines) + len(errors),
        "done_before": len(lines) - len(todo),
        "written": written,
        "skipped": len(errors),
    }


def _vocode_into(manifest, todo, vocoder, out_dir, durations, speaker, style, progress, errors):
    """Vocode `todo`, shortest first, a chunk at a time; each wav then its manifest line."""
    from tqdm import tqdm

    speaker_id, style_id = check_request(vocoder, durations, speaker, style)
    kept = []
    for line in todo:
        problem = vocoder.check_units(line.units)
        if problem is None:
            kept.append(line)
        else:
            errors.append({"line": line.origin, "error": problem})
    kept.sort(key=lambda line: line.units.size)
    written = 0
    with tqdm(total=len(kept), unit="utt", desc="vocode", disable=not progress) as bar:
        for start in range(0, len(kept), CHUNK_LINES):
            chunk = kept[start : start + CHUNK_LINES]
            waves = vocoder.vocode(
                [line.units for line in chunk],
                frames_per_unit(vocoder, chunk, durations),
                speaker_id,
                style_id,
            )
            for line, wave in zip(chunk, waves, strict=True):
                write_wav(out_dir / line.wav, wave, vocoder.sample_rate)
                seconds = round(wave.size / vocoder.sample_rate, 4)
                manifest.append({"file_name": line.wav, "source": line.origin, "seconds": seconds})
                written += 1
            manifest.flush()
            bar.update(len(chunk))
    return written


def check_vocoder_for(vocoder: Vocoder, num_units: int) -> None:
    """Refuse a vocoder that reads fewer unit ids than a model of `num_units` writes."""
    if vocoder.num_units is not None and vocoder.num_units < num_units:
        raise JaxslmError(
            f"vocoder {vocoder.name} reads {vocoder.num_units} units but the model writes "
            f"{num_units}; use the vocoder of the model's speech tokenizer"
        )


def write_record_audio(
    records: list[dict],
    vocoder: Vocoder,
    out_dir: Path,
    prompt_units: list[list[int]] | None = None,
    progress: bool = True,
) -> None:
    """Vocode each record's `units` (after its prompt's units, when given) into `out_dir`,
    named as `wav_name` says, and set the record's `audio` to the wav's relative path.
    Records without units get `audio` None."""
    from tqdm import tqdm

    todo = []
    for index, record in enumerate(records):
        units = [*(prompt_units[index] if prompt_units else []), *record["units"]]
        record["audio"] = wav_name(record) if units else None
        if units:
            todo.append((record["audio"], np.asarray(units, np.int64)))
    with tqdm(total=len(todo), unit="utt", desc="vocode", disable=not progress) as bar:
        for start in range(0, len(todo), CHUNK_LINES):
            chunk = todo[start : start + CHUNK_LINES]
            waves = vocoder.vocode([units for _, units in chunk])
            for (name, _), wave in zip(chunk, waves, strict=True):
                write_wav(out_dir / name, wave, vocoder.sample_rate)
            bar.update(len(chunk))
