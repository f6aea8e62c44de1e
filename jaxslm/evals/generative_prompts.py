"""Prompts of slamkit's generative metrics: the first seconds of audio files, or of unit lines.

slamkit (slamkit/metric/generative_metric.py, `PromptDataset`) lists the audio files of a
folder, keeps those at least `min_file_length` seconds long, takes the first `num_files`, and
cuts each to `prompt_length` seconds, or, with `use_alignment`, to the end of the word whose
end time is closest to `prompt_length` (the first such word on a tie). A file's alignment is
`<file>.json` beside it, or `<alignment_folder>/<name up to its first dot>.json`, holding
`aligned_text`: [word, start, end] triples in seconds. Audio is cut before it is tokenized.

jaxslm lists files in sorted order (slamkit: the file system's glob order). Unit lines
(`{file_name, units, duration}`, as tokenize_audio writes, e.g. the toy corpus's eval sets)
are cut at unit ends (`duration` x --frame-seconds; one frame per unit without `duration`),
by seconds or by the line's own `aligned_text`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.generation.prompts import cut_units


@dataclass(frozen=True)
class Prompt:
    """One prompt: its name, its (cut) units, and its (cut) 16 kHz audio when it had audio."""

    name: str
    units: tuple[int, ...]
    audio: np.ndarray | None = None


@dataclass(frozen=True)
class PromptRules:
    """How prompts are chosen and cut (slamkit's metric config keys in brackets)."""

    seconds: float | None = 3.0  # prompt_length
    num_files: int | None = None  # num_files
    min_seconds: float | None = None  # min_file_length
    use_alignment: bool = False  # use_alignment
    alignment_folder: Path | None = None  # alignment_folder
    frame_seconds: float = 0.04  # unit lines only


def cut_location(words: list, seconds: float, origin: str) -> float:
    """The end time (s) of the word whose end is closest to `seconds`, the first on a tie."""
    try:
        ends = np.asarray([float(word[2]) for word in words])
    except (TypeError, ValueError, IndexError):
        raise JaxslmError(f"{origin}: 'aligned_text' must be [word, start, end] triples") from None
    if ends.size == 0:
        raise JaxslmError(f"{origin}: 'aligned_text' has no words to cut the prompt at")
    return float(ends[int(np.argmin(np.abs(ends - seconds)))])


def unit_prompts(path: Path, rules: PromptRules) -> list[Prompt]:
    """Prompts from a JSONL of unit lines."""
    from jaxslm.textfiles import read_utf8

    prompts = []
    for number, raw in enumerate(read_utf8(path, "prompt JSONL").splitlines(), start=1):
        if not raw.strip():
            continue
        origin = f"{path}:{number}"
        record = _json_object(raw, origin)
        units, durations = _units_and_durations(record, origin)
        seconds = float(np.sum(durations)) * rules.frame_seconds
        if rules.min_seconds is not None and seconds < rules.min_seconds:
            continue
        cut = rules.seconds
        if rules.use_alignment and cut is not None:
            if "aligned_text" not in record:
                raise JaxslmError(f"{origin}: use_alignment needs the line's 'aligned_text'")
            cut = cut_location(record["aligned_text"], cut, origin)
        kept = cut_units(units, durations, rules.frame_seconds, cut)
        prompts.append(Prompt(str(record.get("file_name", origin)), tuple(kept)))
        if rules.num_files is not None and len(prompts) == rules.num_files:
            break
    if not prompts:
        raise JaxslmError(f"{path}: no prompt lines (or none long enough)")
    return prompts


def audio_prompts(source: Path, rules: PromptRules, tokenizer) -> list[Prompt]:
    """Prompts from an audio file, folder or list file, tokenized by `tokenizer` after the cut."""
    from jaxslm.speech.audio import SAMPLE_RATE, audio_seconds, load_audio
    from jaxslm.tokenize_audio import list_audio

    chosen = []
    for name, path in list_audio(source):
        if rules.min_seconds is not None and audio_seconds(path) < rules.min_seconds:
            continue
        chosen.append((name, path))
        if rules.num_files is not None and len(chosen) == rules.num_files:
            break
    if not chosen:
        raise JaxslmError(f"{source}: no audio file long enough for a prompt")
    waves = []
    for _, path in chosen:
        wave = load_audio(path)
        cut = rules.seconds
        if rules.use_alignment and cut is not None:
            alignment = _alignment_file(path, rules.alignment_folder)
            cut = cut_location(_read_alignment(alignment), cut, str(alignment))
        waves.append(wave if cut is None else wave[: int(cut * SAMPLE_RATE)])
    prompts = []
    for (name, _), wave, (units, _) in zip(chosen, waves, tokenizer.units(waves), strict=True):
        if units.size == 0:
            raise JaxslmError(f"{name}: the prompt is too short for one HuBERT frame")
        prompts.append(Prompt(name, tuple(units.tolist()), wave))
    return prompts


def _alignment_file(audio: Path, folder: Path | None) -> Path:
    if folder is None:
        return audio.with_suffix(".json")
    return folder / (audio.name.split(".")[0] + ".json")


def _read_alignment(path: Path) -> list:
    if not path.is_file():
        raise JaxslmError(f"{path}: no alignment file (use_alignment needs one per prompt)")
    record = _json_object(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(record.get("aligned_text"), list):
        raise JaxslmError(f"{path}: no 'aligned_text' list of [word, start, end]")
    return record["aligned_text"]


def _json_object(text: str, origin: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except ValueError as err:
        raise JaxslmError(f"{origin}: not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise JaxslmError(f"{origin}: must be a JSON object")
    return record


def _units_and_durations(record: dict, origin: str) -> tuple[list[int], list[int]]:
    units, durations = record.get("units"), record.get("duration")
    integers = isinstance(units, list) and all(
        isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in units
    )
    if not integers or not units:
        raise JaxslmError(f"{origin}: 'units' must be a non-empty list of non-negative integers")
    if durations is None:
        return units, [1] * len(units)
    if not isinstance(durations, list) or len(durations) != len(units):
        raise JaxslmError(f"{origin}: 'duration' needs one frame count per unit")
    return units, durations
