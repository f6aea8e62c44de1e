"""Benchmark inputs: slamkit's folder layouts or pre-tokenized JSONL, read into named items.

An item is one utterance or text of a benchmark, named by its path relative to the data root
without extension (`0_correct`, `speaker3/12_word`), holding speech units and/or text. A folder
gives one item per stem: `.txt` files give text, audio files give units looked up in a units
file (the JSONL of `python -m jaxslm.tokenize_audio`: lines `{file_name, units, duration}`), or
their path, to be tokenized once the items are paired (`jaxslm.evals.audio_units`).
A JSONL file gives one item per line: `{file_name, units?, text?, phenomenon?}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from jaxslm.errors import JaxslmError

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
TEXT_SUFFIX = ".txt"


@dataclass(frozen=True)
class Item:
    """One benchmark input. `origin` names where it came from, for error messages; `audio` is
    the audio file its units are (or are still to be) computed from."""

    name: str
    origin: str
    units: np.ndarray | None = None
    text: str | None = None
    phenomenon: str | None = None
    audio: Path | None = None

    @property
    def group(self) -> str:
        """The subfolder holding the item ("" at the top level)."""
        return str(PurePosixPath(self.name).parent).strip(".")

    @property
    def base(self) -> str:
        """The item's own name without its subfolder."""
        return PurePosixPath(self.name).name


def load_items(
    path: str | Path, units_file: str | Path | None = None, keep_audio: bool = False
) -> list[Item]:
    """Items of a benchmark JSONL file or folder, in file order (JSONL) or by name (folder).

    Audio in a folder gets its units from `units_file`; failing that, with `keep_audio`, the
    item keeps the file as `audio` (units None) to be tokenized later.
    """
    path = Path(path)
    if path.is_file():
        return read_jsonl_items(path)
    if path.is_dir():
        units = read_units_file(units_file) if units_file is not None else None
        return _folder_items(path, units, units_file, keep_audio)
    raise JaxslmError(f"{path}: no such benchmark file or folder")


def read_jsonl_items(path: Path) -> list[Item]:
    """One item per line of `{file_name, units?, text?, phenomenon?}`; a `.wav` line and a
    `.txt` line of the same stem merge into one item."""
    items: dict[str, Item] = {}
    for number, record in jsonl_records(path):
        origin = f"{path}:{number}"
        name = record.get("file_name")
        if not isinstance(name, str) or not name:
            raise JaxslmError(f"{origin}: each line needs a non-empty string 'file_name'")
        units = units_list(record["units"], origin) if "units" in record else None
        text = record.get("text")
        if text is not None and not isinstance(text, str):
            raise JaxslmError(f"{origin}: 'text' must be a string")
        if units is None and text is None:
            raise JaxslmError(f"{origin}: the line has neither 'units' nor 'text'")
        item = Item(_stem(name), origin, units, text, record.get("phenomenon"))
        items[item.name] = _merge(items[item.name], item) if item.name in items else item
    if not items:
        raise JaxslmError(f"{path}: no lines")
    return list(items.values())


def read_units_file(path: str | Path) -> dict[str, np.ndarray]:
    """file_name -> units of a tokenize_audio JSONL, keyed by the name as written."""
    path = Path(path)
    if not path.is_file():
        raise JaxslmError(f"--units {path}: no such file")
    units = {}
    for number, record in jsonl_records(path):
        name = record.get("file_name")
        if not isinstance(name, str) or not name:
            raise JaxslmError(
                f"{path}:{number}: each line needs a non-empty string 'file_name' (the audio "
                "file it holds the units of), as `python -m jaxslm.tokenize_audio` writes"
            )
        units[name] = units_list(record.get("units"), f"{path}:{number}")
    return units


def _folder_items(root: Path, units: dict | None, units_file, keep_audio: bool) -> list[Item]:
    files = sorted(
        p
        for p in [*root.glob("*"), *root.glob("*/*")]
        if p.is_file() and p.suffix.lower() in (*AUDIO_SUFFIXES, TEXT_SUFFIX)
    )
    if not files:
        raise JaxslmError(
            f"{root}: no audio ({', '.join(AUDIO_SUFFIXES)}) or {TEXT_SUFFIX} files here or in "
            "its subfolders"
        )
    lookup = _UnitsLookup(units, root) if units is not None else None
    items: dict[str, Item] = {}
    for file in files:
        name = file.relative_to(root).with_suffix("").as_posix()
        item = items.get(name, Item(name, str(file)))
        if file.suffix.lower() == TEXT_SUFFIX:
            item = replace(item, text=_read_text(file))
        elif lookup is not None:
            item = replace(item, units=lookup.find(file, units_file), origin=str(file))
        elif keep_audio:
            item = replace(item, audio=file, origin=str(file))
        else:
            raise JaxslmError(
                f"{file}: audio needs speech units; pass --hubert and --codebook to tokenize it "
                "here, or tokenize the folder once with `python -m jaxslm.tokenize_audio --out "
                "units.jsonl` and pass --units units.jsonl"
            )
        items[name] = item
    return list(items.values())


class _UnitsLookup:
    """Finds a file's units under the longest key that ends its path (`part/0_a.wav`, the full
    path, or just `0_a.wav`); a key that would serve two files is refused as ambiguous."""

    def __init__(self, units: dict[str, np.ndarray], root: Path):
        self.units = {PurePosixPath(key).parts: value for key, value in units.items()}
        self.root, self.claimed = root, {}

    def find(self, file: Path, units_file) -> np.ndarray:
        parts = PurePosixPath(file.absolute().as_posix()).parts
        for start in range(len(parts)):
            key = parts[start:]
            if key in self.units:
                owner = self.claimed.setdefault(key, file)
                if owner != file:
                    raise JaxslmError(
                        f"{file}: its units entry {'/'.join(key)!r} in {units_file} also "
                        f"matches {owner}; key lines by the path relative to {self.root}"
                    )
                return self.units[key]
        raise JaxslmError(
            f"{file}: no units in {units_file}; key lines by file name or by the path relative "
            f"to {self.root}, or tokenize this folder again"
        )


def jsonl_records(path: Path):
    """(line number, object) of each non-blank line of a JSONL file; one-line errors name
    the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise JaxslmError(f"{path}: not UTF-8 text ({err}); expected JSON lines") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record: Any = json.loads(line)
        except json.JSONDecodeError as err:
            raise JaxslmError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise JaxslmError(f"{path}:{number}: each line must be a JSON object")
        yield number, record


def units_list(value, origin: str) -> np.ndarray:
    """A line's units as int64, or a one-line error naming `origin`."""
    if not isinstance(value, list) or not all(
        isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in value
    ):
        raise JaxslmError(f"{origin}: 'units' must be a list of non-negative integers")
    return np.asarray(value, np.int64)


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as err:
        raise JaxslmError(f"{file}: cannot be decoded as UTF-8 text ({err})") from err


def _stem(name: str) -> str:
    path = PurePosixPath(name)
    if path.suffix.lower() in (*AUDIO_SUFFIXES, TEXT_SUFFIX):
        path = path.with_suffix("")
    return path.as_posix()


def _merge(first: Item, second: Item) -> Item:
    """Join a speech line and a text line of one stem; anything else is a repeated name."""
    if (first.units is None) == (second.units is None) or (first.text is None) == (
        second.text is None
    ):
        raise JaxslmError(
            f"{second.origin}: file_name {second.name!r} repeats {first.origin}; names must be "
            "unique (one line with units and one with text may share a stem)"
        )
    units = first.units if first.units is not None else second.units
    text = first.text if first.text is not None else second.text
    return replace(first, units=units, text=text, phenomenon=first.phenomenon or second.phenomenon)
