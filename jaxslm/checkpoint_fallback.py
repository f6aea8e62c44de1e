"""The newest intact checkpoint: a damaged one is skipped with a warning that names it and the
file at fault, and the previous one is read instead. Training resume, `jaxslm.load`,
`python -m jaxslm.evaluate` and `export-hf` all read checkpoints this way.

Damage shows in two ways: a JSON file that Orbax or Grain wrote does not parse (found before
anything is read, so every process of a run sees it alike), or reading fails (a truncated or
missing array file). Other failures are not damage and fall back to nothing: a checkpoint whose
stored shapes do not fit the model it is read into (`check_fits`, from Orbax's metadata before
any array is read: the model or the vocabulary changed), or a reading error that says nothing
about the files (out of memory, an I/O or permission error, a timeout) stops with a JaxslmError
and leaves the checkpoint where it is.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orbax.checkpoint as ocp

from jaxslm.errors import JaxslmError

T = TypeVar("T")
# The JSON files of an Orbax checkpoint (its metadata, zarr array headers, Grain and JSON items).
JSON_NAMES = ("_CHECKPOINT_METADATA", "_METADATA", "_sharding", ".zarray", "metadata")
JSON_FOLDERS = ("array_metadatas",)
# Reading errors that say nothing about the checkpoint's files (Python's, and the status codes
# TensorStore and XLA put at the start of theirs): the command stops, the checkpoint stays.
NOT_DAMAGE = (MemoryError, PermissionError, TimeoutError, InterruptedError, ConnectionError)
DAMAGE_OS_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
NOT_DAMAGE_CODES = (
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "CANCELLED",
    "ABORTED",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
)
ORBAX_SHAPE_MISMATCH = "is not compatible with the stored shape"  # when check_fits was skipped
SHOWN_MISMATCHES = 3


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
    """Turn an error raised while the block reads the checkpoint at `directory` into
    DamagedCheckpoint with a one-line reason, when it may come from the files. JaxslmError
    passes unchanged; an error that is not damage (out of memory, I/O, a shape mismatch)
    becomes a JaxslmError, so that the checkpoint is neither skipped nor set aside."""
    try:
        yield
    except JaxslmError:
        raise
    except Exception as error:  # Orbax and TensorStore raise many types for an unreadable file
        reason = _one_line(error, directory)
        if any(ORBAX_SHAPE_MISMATCH in str(cause) for cause in _chain(error)):
            raise JaxslmError(
                f"{directory} does not fit the model it is read into: {reason}; the model or "
                "the vocabulary changed since it was saved"
            ) from error
        if not _is_damage(error):
            raise JaxslmError(
                f"reading {directory} failed: {reason}; this is no sign of damage and the "
                "checkpoint is left as it is: rerun once the cause (memory, the file system) "
                "is dealt with"
            ) from error
        raise DamagedCheckpoint(reason) from error


def check_fits(items: dict[Path, Any], hint: str, partial: bool = False) -> None:
    """Refuse, with a JaxslmError naming the parameters, their stored and expected shapes and
    `hint` (the likely cause and fix), Orbax item directories (the keys of `items`) whose tree
    or shapes differ from their abstract targets (the values). Only Orbax's metadata is read
    (a damaged metadata file raises as `reading` expects). With `partial`, stored entries the
    target lacks are fine. Dtypes are not compared: Orbax casts on restore (a bfloat16 import
    trains in float32)."""
    problems = []
    for item_dir, target in items.items():
        with contextlib.closing(ocp.PyTreeCheckpointHandler()) as handler:
            stored = _flat_shapes(handler.metadata(item_dir).tree, item_dir.name)
        expected = _flat_shapes(target, item_dir.name)
        for name, shape in expected.items():
            if name not in stored:
                problems.append(f"{name} {shape} of the model is not in the checkpoint")
            elif stored[name] != shape:
                problems.append(
                    f"{name} has shape {stored[name]} in the checkpoint, {shape} in the model"
                )
        if not partial:
            problems += [
                f"{name} {shape} of the checkpoint is not in the model"
                for name, shape in stored.items()
                if name not in expected
            ]
    if problems:
        more = len(problems) - SHOWN_MISMATCHES
        listed = "; ".join(problems[:SHOWN_MISMATCHES]) + (
            f" (and {more} more)" if more > 0 else ""
        )
        where = os.path.commonpath(list(items)) if len(items) > 1 else next(iter(items))
        raise JaxslmError(f"{where} does not fit the model it is read into: {listed}; {hint}")


def _flat_shapes(tree: Any, prefix: str) -> dict[str, tuple[int, ...]]:
    """Shape of each leaf of `tree` (arrays, ShapeDtypeStructs or Orbax's value metadata) by
    its Orbax parameter name under `prefix` (e.g. params.embed.embedding)."""
    flat = ocp.tree.to_flat_dict(tree, sep=".")
    return {f"{prefix}.{name}": tuple(getattr(leaf, "shape", ())) for name, leaf in flat.items()}


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


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and the errors it was raised from or while handling, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _is_damage(error: BaseException) -> bool:
    """Whether `error` may come from damaged files, rather than from memory, the file system's
    state or the connection to it (those leave the checkpoint where it is)."""
    for cause in _chain(error):
        if isinstance(cause, NOT_DAMAGE):
            return False
        if isinstance(cause, OSError) and not isinstance(cause, DAMAGE_OS_ERRORS):
            return False
        if any(str(cause).lstrip().startswith(f"{code}:") for code in NOT_DAMAGE_CODES):
            return False
    return True


def _one_line(error: BaseException, directory: Path) -> str:
    """The first line of the message in `error`'s chain that names a file under `directory`
    (TensorStore's names the array and the file), else of the outermost message."""
    lines = []
    for current in _chain(error):
        text = str(current).split("Traceback (most recent call last)")[0].strip()
        lines.append(text.splitlines()[0] if text else type(current).__name__)
    naming = [line for line in lines if str(directory) in line]
    return (naming or lines)[0]
