"""Read corpus sources into records, skipping and counting bad ones.

Sources: slamkit feature JSONL (`{file_name, units, duration}`, also what
`python -m jaxslm.tokenize_audio` writes), optionally with word alignments from slamkit's
alignment JSON (`{file: [{word, start, end}, ...]}`) or an `aligned_text` field in the line;
and text corpora (`.txt`, one document per line, or JSONL with a `text` field).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jaxslm.data.records import TextDocument, Utterance, Word, problem_with
from jaxslm.errors import JaxslmError


@dataclass
class SkipReport:
    """Bad records by reason, with the first place each reason was seen."""

    strict: bool = False
    counts: Counter = field(default_factory=Counter)
    first_seen: dict[str, str] = field(default_factory=dict)

    def skip(self, where: str, reason: str) -> None:
        """Count a bad record (`where` = file:line, `reason` = 'field: reason: detail');
        in strict mode raise instead."""
        if self.strict:
            raise JaxslmError(f"{where}: {reason} (run without --strict to skip such records)")
        kind = ": ".join(part.strip() for part in reason.split(":", 2)[:2])
        self.counts[kind] += 1
        self.first_seen.setdefault(kind, f"{where}: {reason}")

    def summary(self) -> str:
        """One line per reason: count and first example."""
        if not self.counts:
            return "no records skipped"
        lines = [f"skipped {sum(self.counts.values())} records:"]
        for kind, count in self.counts.most_common():
            lines.append(f"  {count:8d}  {kind}  (first: {self.first_seen[kind]})")
        return "\n".join(lines)


def read_alignments(path: Path) -> dict[str, list[Word]]:
    """slamkit alignment JSON: file name -> words, keyed by full name and by stem."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise JaxslmError(f"{path}: cannot read alignment JSON ({err})") from err
    if not isinstance(raw, dict):
        raise JaxslmError(f"{path}: expected an object mapping file names to word lists")
    alignments = {}
    for name, words in raw.items():
        parsed = _words(words)
        alignments[name] = parsed
        alignments.setdefault(Path(name).stem, parsed)
    return alignments


def _words(raw: Any) -> list[Word]:
    """Words from [{word, start, end}] or [[word, start, end]]; adds leading spaces if absent."""
    words = [
        Word(str(w["word"]), float(w["start"]), float(w["end"]))
        if isinstance(w, dict)
        else Word(str(w[0]), float(w[1]), float(w[2]))
        for w in raw
    ]
    if words and not any(w.text[:1].isspace() for w in words):
        words = [Word(" " + w.text, w.start, w.end) for w in words]
    return words


def read_utterances(
    path: Path,
    num_units: int,
    frame_seconds: float,
    report: SkipReport,
    alignments: dict[str, list[Word]] | None = None,
) -> Iterator[Utterance]:
    """Valid utterances of a unit JSONL file; bad lines go to `report`."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                utterance = _utterance(json.loads(line), frame_seconds, alignments)
            except ValueError as err:
                report.skip(where, f"format: not a unit record: {err}")
                continue
            problem = problem_with(utterance, num_units)
            if problem is not None:
                report.skip(where, problem)
                continue
            yield utterance


def _utterance(line: dict, frame_seconds: float, alignments) -> Utterance:
    if not isinstance(line, dict):
        raise ValueError("line is not a JSON object")
    missing = [key for key in ("file_name", "units", "duration") if key not in line]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    name = str(line["file_name"])
    if line.get("aligned_text"):
        words = _words(line["aligned_text"])
    elif alignments is not None:
        words = alignments.get(name, alignments.get(Path(name).stem, []))
    else:
        words = []
    try:
        units = np.asarray(line["units"], dtype=np.int64)
        durations = np.asarray(line["duration"], dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"units/duration are not integer lists ({err})") from err
    return Utterance(
        id=name,
        units=units.astype(np.int32),
        durations=durations.astype(np.int32),
        frame_seconds=frame_seconds,
        words=tuple(words),
        transcript="".join(w.text for w in words) or line.get("text"),
        speaker=line.get("speaker"),
    )


def read_text_documents(path: Path, report: SkipReport) -> Iterator[TextDocument]:
    """Documents of a `.txt` (one per line) or `.jsonl` (`text` field) file."""
    is_jsonl = path.suffix in (".jsonl", ".json")
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            where = f"{path}:{number}"
            text = line.rstrip("\n")
            if is_jsonl:
                if not text.strip():
                    continue
                try:
                    text = json.loads(text)["text"]
                except (ValueError, KeyError, TypeError):
                    report.skip(where, "format: not a text record: no JSON 'text' field")
                    continue
            if not str(text).strip():
                if is_jsonl:
                    report.skip(where, "text: empty document: nothing to read")
                continue
            yield TextDocument(id=f"{path.name}:{number}", text=str(text))
