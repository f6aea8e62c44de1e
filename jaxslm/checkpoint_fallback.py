"""The newest intact checkpoint: a damaged one is skipped with a warning that names it and the
file at fault, and the previous one is read instead. Training resume, `jaxslm.load`,
`python -m jaxslm.evaluate` and `export-hf` all read checkpoints this way.

Damage shows in two ways: a JSON file that Orbax or Grain wrote does not parse (found before
anything is read, so every process of a run sees it alike), or reading fails (a truncated or
missing array file).
"""

from __future__ import annotations

import contextlib
import gc
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from jaxslm.errors import JaxslmError

T = TypeVar("T")
# The JSON files of an Orbax checkpoint (its metadata, zarr array headers, Grain and JSON items).
JSON_NAMES = ("_CHECKPOINT_METADATA", "_METADATA", "_sharding", ".zarray", "metadata")
JSON_FOLDERS = ("array_metadatas",)


class DamagedCheckpoint(Exception):
    """A checkpoint that cannot be read; the message names the file and what is wrong."""


def newest_intact(candidates: Sequence[Path], read: Callable[[Path], T]) -> tuple[Path, T]:
    """The first of `candidates` (checkpoint directories, newest first) that is intact, and what
    `read` returns for it. `read` raises DamagedCheckpoint (see `reading`) for a damaged one,
    which is then skipped with a warning. Raises JaxslmError when none is intact."""
    reasons = []
    for index, directory in enumerate(candidates):
        try:
            damage = damaged_json(directory)
            if damage is not None:
                raise DamagedCheckpoint(damage)
            return directory, read(directory)
        except DamagedCheckpoint as error:
            reasons.append(str(error))
        # A failed Orbax read leaves coroutines in reference cycles: collected now, they go
        # quietly (left to interpreter exit, they print pages of "Event loop is closed").
        gc.collect()
        if index + 1 < len(candidates):
            warnings.warn(
                f"{directory} is damaged: {reasons[-1]}; falling back to {candidates[index + 1]}",
                stacklevel=2,
            )
    older = f" (and the {len(reasons) - 1} older ones)" if len(reasons) > 1 else ""
    raise JaxslmError(
        f"no intact checkpoint: {candidates[0]}{older} is damaged: {reasons[0]}; restore the "
        "files from a copy, or re-create the checkpoint"
    )


@contextlib.contextmanager
def reading(directory: Path) -> Iterator[None]:
    """Turn any error raised while the block reads the checkpoint at `directory` into
    DamagedCheckpoint with a one-line reason (JaxslmError passes unchanged)."""
    try:
        yield
    except JaxslmError:
        raise
    except Exception as error:  # Orbax and TensorStore raise many types for an unreadable file
        raise DamagedCheckpoint(_one_line(error, directory)) from error


def damaged_json(directory: Path) -> str | None:
    """What is wrong with the first JSON file under `directory` that does not parse, or None."""
    for path in sorted(directory.rglob("*")):
        named = path.name in JSON_NAMES or path.suffix == ".json"
        if not (named or path.parent.name in JSON_FOLDERS) or not path.is_file():
            continue
        name = path.relative_to(directory)
        try:
            json.loads(path.read_bytes())
        except ValueError as error:
            return f"{name} is empty" if not path.stat().st_size else f"{name}: {error}"
    return None


def _one_line(error: BaseException, directory: Path) -> str:
    """The first line of the message in `error`'s chain that names a file under `directory`
    (TensorStore's names the array and the file), else of the outermost message."""
    lines = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).split("Traceback (most recent call last)")[0].strip()
        lines.append(text.splitlines()[0] if text else type(current).__name__)
        current = current.__cause__ or current.__context__
    naming = [line for line in lines if str(directory) in line]
    return (naming or lines)[0]
