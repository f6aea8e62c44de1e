"""Preference records: (prompt, chosen, rejected) triples read from JSONL, each side units
and/or text, with bad records skipped and counted as the corpus builder does
(jaxslm.data.ingest), and slamkit's repetition filter (auto-BLEU).

A line is what slamkit's cli/preference_alignment_feature_extractor.py writes, with text:

    {"prompt": {"units": [...], "duration": [...]}, "chosen": {...}, "rejected": {...},
     "prompt_text": "...", "chosen_text": "...", "rejected_text": "...", "id": "..."}

A side may also be a plain string (its text), a plain list of units, or come from
`<side>_path` (the audio file of slamkit's input), whose units a lookup gives
(`python -m jaxslm.tokenize_audio` output, or audio the builder tokenizes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxslm.data.ingest import BadRecord, SkipReport, integer_list, numbered_lines, parse_json
from jaxslm.data.records import units_problem
from jaxslm.errors import JaxslmError
from jaxslm.evals.auto_bleu import auto_bleu, words

SIDES = ("prompt", "chosen", "rejected")
UnitLookup = Callable[[str], "list[int] | None"]


@dataclass(frozen=True)
class Side:
    """One side of a pair: its units (None: none given) and its text (None: none given)."""

    units: np.ndarray | None = None
    text: str | None = None

    def same_as(self, other: Side) -> bool:
        """Whether both sides hold the same units and the same text."""
        same_units = (self.units is None) == (other.units is None) and (
            self.units is None or np.array_equal(self.units, other.units)
        )
        return same_units and self.text == other.text


@dataclass(frozen=True)
class PreferencePair:
    """A prompt with a preferred (`chosen`) and a dispreferred (`rejected`) continuation."""

    id: str
    prompt: Side
    chosen: Side
    rejected: Side


def read_preferences(
    path: Path,
    num_units: int,
    report: SkipReport,
    units_of: UnitLookup | None,
    label: str,
) -> Iterator[tuple[int, PreferencePair]]:
    """(line number, pair) of the valid pairs of a preference JSONL file; bad lines go to
    `report` (file:line, reason). `units_of(path)` gives the units of a side that names only
    its audio file. A pair without an `id` is named `LABEL:LINE` (`label`: the file's, from
    `file_labels`)."""
    for number, line in numbered_lines(path, report):
        if not line.strip():
            continue
        try:
            yield number, _pair(parse_json(line), num_units, units_of, f"{label}:{number}")
        except BadRecord as problem:
            report.skip(f"{path}:{number}", str(problem))


def _pair(line: Any, num_units: int, units_of: UnitLookup | None, default_id: str):
    if not isinstance(line, dict):
        raise BadRecord("format: not a preference record: line is not a JSON object")
    missing = [s for s in SIDES if not any(k in line for k in (s, f"{s}_text", f"{s}_path"))]
    if missing:
        raise BadRecord(f"format: not a preference record: no {', '.join(missing)}")
    record_id = line.get("id", default_id)
    if not isinstance(record_id, str) or not record_id:
        raise BadRecord(f"id: not a name: {record_id!r:.40}")
    sides = {name: _side(name, line, num_units, units_of) for name in SIDES}
    if sides["chosen"].same_as(sides["rejected"]):
        raise BadRecord("pair: chosen equals rejected: the pair teaches nothing")
    return PreferencePair(record_id, **sides)


def _side(name: str, line: dict, num_units: int, units_of: UnitLookup | None) -> Side:
    """A side from `line[name]` (object, string or unit list), `<name>_text` and
    `<name>_path`."""
    raw, units, text = line.get(name), None, None
    if isinstance(raw, dict):
        units, text = raw.get("units"), raw.get("text")
    elif isinstance(raw, str):
        text = raw
    elif isinstance(raw, list):
        units = raw
    elif raw is not None:
        raise BadRecord(f"{name}: not a side: a {type(raw).__name__}, not an object or a string")
    for key, value in ((f"{name}.text", text), (f"{name}_text", line.get(f"{name}_text"))):
        if value is not None and not isinstance(value, str):
            raise BadRecord(f"{key}: not a string: {value!r:.40}")
    text = text if text is not None else line.get(f"{name}_text")
    audio = line.get(f"{name}_path")
    if units is None and audio is not None:
        if not isinstance(audio, str):
            raise BadRecord(f"{name}_path: not a path: {audio!r:.40}")
        units = None if units_of is None else units_of(audio)
        if units is None and not (text or "").strip():
            raise BadRecord(
                f"{name}_path: no units: {audio!r:.60} is in no unit file (--preference-units)"
            )
    if units is not None:
        units = integer_list(units, f"{name}.units")
        if units and (problem := units_problem(min(units), max(units), num_units)):
            raise BadRecord(f"{name}.{problem}")
        units = np.asarray(units, np.int32) if units else None
    if units is None and not (text or "").strip():
        raise BadRecord(f"{name}: empty: no units and no text")
    return Side(units, text if (text or "").strip() else None)


@dataclass(frozen=True)
class RepetitionFilter:
    """slamkit's preference filter (`get_repetition_filter_fn`, slamkit/data/hf_dataset.py):
    keep a pair when the auto-BLEU-`n` of its prompt and chosen continuation is below
    `max_auto_bleu`. Over the words (NLTK's word tokenizer) of `prompt text + " " + chosen
    text`, as slamkit; a pair without both texts is measured over its units instead."""

    n: int = 2
    max_auto_bleu: float = 0.3

    def __post_init__(self) -> None:
        if self.n < 1:
            raise JaxslmError(f"--auto-bleu-n {self.n}: n-grams need n >= 1")

    def keeps(self, pair: PreferencePair) -> bool:
        """Whether `pair` passes the filter."""
        return auto_bleu(self.tokens(pair), self.n) < self.max_auto_bleu

    @staticmethod
    def tokens(pair: PreferencePair) -> list:
        """The tokens the filter counts n-grams over."""
        if pair.prompt.text and pair.chosen.text:
            return words(f"{pair.prompt.text} {pair.chosen.text}")
        return [*_units(pair.prompt), *_units(pair.chosen)]


def _units(side: Side) -> list[int]:
    return [] if side.units is None else side.units.tolist()
