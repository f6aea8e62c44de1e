"""Read corpus sources into records, skipping and counting bad ones.

Sources: slamkit feature JSONL (`{file_name, units, duration}`, also what
`python -m jaxslm.tokenize_audio` writes), optionally with word alignments from slamkit's
alignment JSON (`{file: [{word, start, end}, ...]}`) or an `aligned_text` field in the line;
and text corpora (`.txt`, one document per line, or JSONL with a `text` field).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jaxslm.data.records import (
    TextDocument,
    Utterance,
    Word,
    durations_problem,
    problem_with,
    units_problem,
)
from jaxslm.errors import JaxslmError


@dataclass
class SkipReport:
    """Bad records by reason, with the first place each reason was seen."""

    strict: bool = False
    counts: Counter = field(default_factory=Counter)
    first_seen: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # kept records worth a word to the user

    def skip(self, where: str, reason: str) -> None:
        """Count a bad record (`where` = file:line, `reason` = 'field: reason: detail');
        in strict mode raise instead."""
        if self.strict:
            raise JaxslmError(f"{where}: {reason} (run without --strict to skip such records)")
        kind = ": ".join(part.strip() for part in reason.split(":", 2)[:2])
        self.counts[kind] += 1
        self.first_seen.setdefault(kind, f"{where}: {reason}")

    def summary(self) -> str:
        """One line per reason: count and first example; then the notes."""
        if not self.counts:
            lines = ["no records skipped"]
        else:
            lines = [f"skipped {sum(self.counts.values())} records:"]
        for kind, count in self.counts.most_common():
            lines.append(f"  {count:8d}  {kind}  (first: {self.first_seen[kind]})")
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


class BadRecord(Exception):
    """A bad record; the message is the reason, 'field: reason: detail'."""


@dataclass(frozen=True)
class Alignment:
    """The words of one file in an alignment JSON, or why they cannot be used."""

    words: tuple[Word, ...] = ()
    problem: str | None = None
    source: str = ""  # the file and entry the words come from


def read_alignments(path: Path) -> dict[str, Alignment]:
    """slamkit alignment JSON: file name -> words, keyed by full name and by stem. A malformed
    entry is kept as its problem: the utterance it belongs to is skipped and counted."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise JaxslmError(f"{path}: cannot read alignment JSON ({err})") from err
    if not isinstance(raw, dict):
        raise JaxslmError(f"{path}: expected an object mapping file names to word lists")
    alignments = {}
    for name, words in raw.items():
        source = f"{path} entry {name!r}"
        try:
            parsed = Alignment(words=tuple(_words(words, source)), source=source)
        except BadRecord as problem:
            parsed = Alignment(problem=str(problem))
        alignments[name] = parsed
        alignments.setdefault(Path(name).stem, parsed)
    return alignments


def _words(raw: Any, source: str) -> list[Word]:
    """Words from [{word, start, end}] or [[word, start, end]]; adds leading spaces if absent."""
    if not isinstance(raw, list):
        raise BadRecord(
            f"words: malformed: {source} is a {type(raw).__name__}, not a list of words"
        )
    words = [_word(entry, source, index) for index, entry in enumerate(raw)]
    if words and not any(w.text[:1].isspace() for w in words):
        words = [Word(" " + w.text, w.start, w.end) for w in words]
    return words


def _word(entry: Any, source: str, index: int) -> Word:
    where = f"words: malformed: {source} word {index}"
    if isinstance(entry, dict):
        missing = [key for key in ("word", "start", "end") if key not in entry]
        if missing:
            raise BadRecord(f"{where} has no {', '.join(missing)}")
        text, start, end = entry["word"], entry["start"], entry["end"]
    elif isinstance(entry, list) and len(entry) == 3:
        text, start, end = entry
    else:
        raise BadRecord(f"{where} is neither {{word, start, end}} nor [word, start, end]")
    if not isinstance(text, str):
        raise BadRecord(f"{where}: the word is {text!r:.40}, not a string")
    for time in (start, end):
        if isinstance(time, bool) or not isinstance(time, int | float):
            raise BadRecord(f"{where}: a time is {time!r:.40}, not a number of seconds")
    try:
        return Word(text, float(start), float(end))
    except OverflowError as err:  # an integer beyond any float
        raise BadRecord(f"{where}: a time is too large to be seconds") from err


def numbered_lines(path: Path, report: SkipReport) -> Iterator[tuple[int, str]]:
    """(number, line) of each line of `path`; lines that are not UTF-8 are skipped and
    counted."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.isascii():
                    try:
                        line.encode("utf-8")
                    except UnicodeEncodeError as err:
                        detail = f"a byte that is not UTF-8 at column {err.start + 1}"
                        report.skip(f"{path}:{number}", f"format: not UTF-8: {detail}")
                        continue
                yield number, line
    except OSError as err:
        raise JaxslmError(f"{path}: cannot read ({err.strerror or err})") from err


def read_utterances(
    path: Path,
    num_units: int,
    frame_seconds: float,
    report: SkipReport,
    alignments: dict[str, Alignment] | None = None,
) -> Iterator[Utterance]:
    """Valid utterances of a unit JSONL file; bad lines go to `report`."""
    for number, line in numbered_lines(path, report):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            utterance, words_from = _utterance(
                parse_json(line), num_units, frame_seconds, alignments
            )
        except BadRecord as problem:
            report.skip(where, str(problem))
            continue
        problem = problem_with(utterance, num_units)
        if problem is not None:
            if words_from and problem.startswith("words:"):
                problem += f" (the words of {words_from})"
            report.skip(where, problem)
            continue
        yield utterance


def parse_json(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as err:
        raise BadRecord(f"format: not JSON: {err}") from err


def _utterance(
    line: Any, num_units: int, frame_seconds: float, alignments
) -> tuple[Utterance, str]:
    """The utterance of a parsed line, and the alignment file entry its words come from ("" for
    none or the line's own); units and durations are checked as Python integers before they
    become int32, so nothing wraps or is truncated."""
    if not isinstance(line, dict):
        raise BadRecord("format: not a unit record: line is not a JSON object")
    missing = [key for key in ("file_name", "units", "duration") if key not in line]
    if missing:
        raise BadRecord(f"format: not a unit record: missing field(s) {missing}")
    name = line["file_name"]
    if not isinstance(name, str) or not name:
        raise BadRecord(f"file_name: not a name: {name!r:.40}")
    for key in ("text", "speaker"):
        if line.get(key) is not None and not isinstance(line[key], str):
            raise BadRecord(f"{key}: not a string: {line[key]!r:.40}")
    units = integer_list(line["units"], "units")
    durations = integer_list(line["duration"], "durations")
    if units and (problem := units_problem(min(units), max(units), num_units)):
        raise BadRecord(problem)
    if durations and (problem := durations_problem(min(durations), max(durations))):
        raise BadRecord(problem)
    words_from = ""
    if line.get("aligned_text"):
        words = _words(line["aligned_text"], "aligned_text")
    elif alignments is not None:
        alignment = alignments.get(name, alignments.get(Path(name).stem, Alignment()))
        if alignment.problem is not None:
            raise BadRecord(alignment.problem)
        words, words_from = list(alignment.words), alignment.source
    else:
        words = []
    utterance = Utterance(
        id=name,
        units=np.array(units, dtype=np.int32),
        durations=np.array(durations, dtype=np.int32),
        frame_seconds=frame_seconds,
        words=tuple(words),
        transcript="".join(w.text for w in words) or line.get("text"),
        speaker=line.get("speaker"),
    )
    return utterance, words_from


def integer_list(values: Any, field: str) -> list[int]:
    """`values` as Python ints: a JSON list of integers. A whole float such as 7.0 counts as 7;
    7.9, NaN, infinities, booleans and strings are refused."""
    if not isinstance(values, list):
        raise BadRecord(f"{field}: not integers: a {type(values).__name__}, not a list")
    if all(type(value) is int for value in values):
        return values
    whole = []
    for index, value in enumerate(values):
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is not int:
            raise BadRecord(f"{field}: not integers: value {index} is {value!r:.40}")
        whole.append(value)
    return whole


def file_labels(paths: list[Path]) -> dict[Path, str]:
    """The name that record ids (`LABEL:LINE`) give each input file: its file name, or where
    two inputs share one, its path from the inputs' common folder; a file given twice is
    refused."""
    resolved = [path.resolve() for path in paths]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise JaxslmError(f"{paths[index]}: given twice; name each input file once")
    names = Counter(path.name for path in paths)
    if max(names.values(), default=0) <= 1:
        return {path: path.name for path in paths}
    root = Path(os.path.commonpath([path.parent for path in resolved]))
    pairs = zip(paths, resolved, strict=True)
    return {path: full.relative_to(root).as_posix() for path, full in pairs}


def read_text_documents(path: Path, report: SkipReport, label: str) -> Iterator[TextDocument]:
    """Documents of a `.txt` (one per line) or `.jsonl` (`text` field) file, with ids
    `LABEL:LINE` (`label`: the file's, from `file_labels`)."""
    is_jsonl = path.suffix in (".jsonl", ".json")
    for number, line in numbered_lines(path, report):
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
            if not isinstance(text, str):
                report.skip(where, f"text: not a string: {text!r:.40}")
                continue
        if not text.strip():
            if is_jsonl:
                report.skip(where, "text: empty document: nothing to read")
            continue
        yield TextDocument(id=f"{label}:{number}", text=text)
