"""A JSONL output built over several runs, one line per `file_name`.

Lines go to `OUT.partial` as they are made, and `OUT.partial` replaces `OUT` in one rename
when a run ends, so `OUT` is always whole. A run holds an flock on `OUT.partial`, so two runs
never append to one file; it trims what a killed run left after the last complete line, and
when `OUT` exists it starts from `OUT`'s lines, so a run adds lines and loses none.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from jaxslm.errors import JaxslmError


class ResumableJsonl:
    """`with ResumableJsonl(out) as output:` `output.done` holds the file names already in
    `OUT` or `OUT.partial`; `append` adds a record, `commit` puts every line in place."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.done: set[str] = set()
        self._staged: set[str] = set()  # names in OUT.partial
        self._seeded = False

    def __enter__(self) -> ResumableJsonl:
        self._handle = self._open_locked()
        try:
            # read once under the lock: only the lock's holder replaces OUT
            self._committed = _committed_lines(self.out) if self.out.is_file() else []
        except JaxslmError:
            self.__exit__(None, None, None)
            raise
        self._handle.seek(0)
        end = 0
        for name, raw in _complete_lines(self._handle):
            self._staged.add(name)
            end += len(raw)
        self._handle.truncate(end)
        self.done = set(self._staged) | {name for name, _ in self._committed}
        self._seeded = self.done == self._staged
        return self

    def __exit__(self, *exc_info: Any) -> None:
        """Release the lock; an empty `OUT.partial` (no progress) is removed."""
        with contextlib.suppress(OSError):
            self._handle.flush()
            if _same_file(self._handle, self.partial) and _size(self._handle) == 0:
                self.partial.unlink()
        self._handle.close()

    def append(self, record: dict[str, Any]) -> None:
        """Add one line (`record` has a `file_name`)."""
        self._seed()
        self._handle.write((json.dumps(record) + "\n").encode())
        self.done.add(record["file_name"])
        self._staged.add(record["file_name"])

    def flush(self) -> None:
        """Hand the appended lines to the operating system (they survive a kill)."""
        self._handle.flush()

    def commit(self) -> None:
        """Rename `OUT.partial`, flushed to disk, onto `OUT`; nothing happens when `OUT`
        already holds every line."""
        if self.out.is_file() and not self._staged:
            return
        self._seed()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        os.replace(self.partial, self.out)

    def _seed(self) -> None:
        """Copy the lines of `OUT` that `OUT.partial` lacks into it, once, before any new line."""
        if self._seeded:
            return
        for name, raw in self._committed:
            if name not in self._staged:
                self._handle.write(raw)
                self._staged.add(name)
        self._seeded = True

    def _open_locked(self) -> IO[bytes]:
        """`OUT.partial` opened for appending (created if missing) under an exclusive lock."""
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.partial, "a+b")  # noqa: SIM115 (held, locked, until __exit__)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise JaxslmError(
                    f"{self.partial}: another run is writing {self.out.name} (it holds the lock "
                    "on this file); wait for it to end, or choose another --out"
                ) from None
            except OSError:
                pass  # no locks on this file system
            if _same_file(handle, self.partial):
                return handle
            handle.close()  # the run that held the lock renamed the file onto OUT meanwhile


def started(out: str | Path) -> bool:
    """Whether an earlier run left `OUT` or `OUT.partial` (a run on no such file starts from
    nothing, so every input is work to do)."""
    out = Path(out)
    return out.exists() or out.with_name(out.name + ".partial").exists()


def report_errors(path: Path, errors: list[dict[str, Any]], what: str) -> None:
    """Write a batch tool's `errors` (one JSON object each) to `path` and say on stderr how
    many `what` they are; with no errors, remove a `path` left by an earlier run."""
    import sys

    from jaxslm.fsutil import atomic_write_text

    if errors:
        atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in errors))
        print(f"{len(errors)} {what}; reasons in {path}", file=sys.stderr)
    else:
        path.unlink(missing_ok=True)


def _same_file(handle: IO[bytes], path: Path) -> bool:
    """Whether `path` names the file `handle` has open."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _size(handle: IO[bytes]) -> int:
    return os.fstat(handle.fileno()).st_size


def _committed_lines(out: Path) -> list[tuple[str, bytes]]:
    """(file_name, raw line) of every line of `OUT`, which a run only ever replaces whole: a
    line that is not one of its records means OUT is another file, or damaged, and is refused
    rather than replaced."""
    with open(out, "rb") as handle:
        raw_lines = handle.read().splitlines(keepends=True)
    lines = list(_complete_lines(iter(raw_lines)))
    if len(lines) < len(raw_lines):
        number = len(lines) + 1
        raise JaxslmError(
            f"{out}:{number}: not a line of this tool's output (a JSON object with a "
            "'file_name', ending in a newline); it would be replaced, so choose another --out, "
            "or mend or remove that file"
        )
    return lines


def _complete_lines(handle) -> Iterator[tuple[str, bytes]]:
    """(file_name, raw line) of each line up to the first that is cut short, not JSON, or has
    no `file_name`."""
    for raw in handle:
        if not raw.endswith(b"\n"):
            return
        try:
            record = json.loads(raw)
        except ValueError:
            return
        if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
            return
        yield record["file_name"], raw
