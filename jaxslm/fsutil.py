"""Output directories that appear complete or not at all, and the staging folders that a killed
writer leaves behind.

A writer stages `OUT` (a folder or a file) in a sibling `.OUT.partial-PID@HOST-XXXXXXXX` that
it holds an flock on, and an overwritten folder `OUT` waits in `.OUT.old-PID@HOST-XXXXXXXX` for
the moment between two renames. The next writer of `OUT` removes such staging folders and files
when they are its user's, were made on its host, their process is gone and their lock is free;
an `.old` folder whose `OUT` is missing is renamed back, since its writer died before the new
output was in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from jaxslm.errors import JaxslmError

_RANDOM = r"[a-z0-9_]{8}"  # what tempfile.mkdtemp appends
_TAGGED = re.compile(rf"(partial|old)-(\d+)@([A-Za-z0-9.-]+)-{_RANDOM}")
_UNTAGGED = re.compile(rf"partial-{_RANDOM}|partial-\d+|old-\d+")  # before writers were recorded
_noted: set[Path] = set()  # untagged folders already reported by this process


def refuse_existing(out_dir: str | Path, overwrite: bool) -> Path:
    """`out_dir` as a Path, refusing an existing one unless `overwrite`."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not overwrite:
        raise JaxslmError(f"{out_dir} already exists; choose a new path or pass --overwrite")
    return out_dir


def prepare_output(out_dir: str | Path, overwrite: bool, make_parents: bool = True) -> Path:
    """Check, before any work, that `out_dir` can be written: its nearest existing ancestor is
    a writable directory (its parent, unless `make_parents`), and it does not exist unless
    `overwrite`. Stale staging folders of `out_dir` are cleared first (see
    `clear_stale_staging`)."""
    out_dir = Path(out_dir).absolute()
    if not make_parents and not out_dir.parent.exists():
        raise JaxslmError(
            f"{out_dir}: cannot be written, its folder {out_dir.parent} does not exist; make it "
            "first or choose another output path"
        )
    _check_writable(out_dir, out_dir.parent)
    clear_stale_staging(out_dir)
    return refuse_existing(out_dir, overwrite)


def prepare_output_file(path: str | Path) -> Path:
    """Check, before any work, that file `path` can be written, or replaced if it exists: it is
    not a folder and its nearest existing ancestor is a writable directory."""
    path = Path(path).absolute()
    if path.is_dir():
        raise JaxslmError(f"{path}: is a folder; give the path of a file to write")
    _check_writable(path, path.parent)
    return path


def prepare_output_folder(path: str | Path) -> Path:
    """Check, before any work, that files can be added to folder `path`: it is a writable
    folder, or the nearest existing ancestor that would hold it is."""
    path = Path(path).absolute()
    _check_writable(path, path)
    return path


def _check_writable(out: Path, start: Path) -> None:
    """Refuse `out` unless the nearest existing one of `start` and its ancestors is a writable
    directory."""
    ancestor = start
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise JaxslmError(
            f"{out}: cannot be written, {ancestor} is a file; choose another output path"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise JaxslmError(
            f"{out}: cannot be written, {ancestor} is not writable (read-only or no "
            "permission); choose another output path"
        )


def clear_stale_staging(out_dir: str | Path) -> list[Path]:
    """Remove the staging folders and files of `out_dir` whose writer is gone (restoring an
    `.old` output whose replacement never arrived), saying so on stderr; returns what was
    removed.

    Staging written before writers were recorded is only reported: nothing tells whether its
    writer still runs.
    """
    out_dir = Path(out_dir).absolute()
    prefix = f".{out_dir.name}."
    removed: list[Path] = []
    if not out_dir.parent.is_dir():
        return removed
    for path in sorted(out_dir.parent.iterdir()):
        rest = path.name[len(prefix) :] if path.name.startswith(prefix) else ""
        tagged = _TAGGED.fullmatch(rest)
        if tagged is None:
            if _UNTAGGED.fullmatch(rest) and path not in _noted:
                _noted.add(path)
                print(
                    f"note: {path} looks like an interrupted write of {out_dir.name} by an older "
                    "jaxslm; remove it by hand if nothing is writing there",
                    file=sys.stderr,
                )
            continue
        kind, pid, host = tagged.group(1), int(tagged.group(2)), tagged.group(3)
        if not _writer_gone(path, pid, host):
            continue
        writer = f"its writer, pid {pid} on {host}, is gone"
        if kind == "old" and not out_dir.exists():
            os.rename(path, out_dir)
            print(f"restored {out_dir} from {path.name} ({writer})", file=sys.stderr)
            continue
        what = "folder" if path.is_dir() else "file"
        with contextlib.suppress(FileNotFoundError):  # another writer may be removing it too
            _remove(path, out_dir.name)
            removed.append(path)
            print(f"removed stale staging {what} {path} ({writer})", file=sys.stderr)
    return removed


def _writer_gone(path: Path, pid: int, host: str) -> bool:
    """Whether the process that made `path` is dead: same user and host, no such pid, and
    no lock held on the folder or file."""
    if host != _host() or pid == os.getpid():
        return False
    try:
        info = path.lstat()
        if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
            return False
        if info.st_uid != os.geteuid():
            return False
        os.kill(pid, 0)
    except ProcessLookupError:
        return not _locked(path)
    except (OSError, OverflowError):  # alive under another user, a folder gone, no such pid
        return False
    return False


def _locked(path: Path) -> bool:
    """Whether a live writer holds the lock on folder or file `path` (False where locks are
    unsupported: the pid check decides alone)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)
    return False


def _remove(path: Path, out_name: str) -> None:
    """Claim `path` by renaming it under this process's tag, then delete it, so a removal cut
    short is itself a stale folder, and two removers never share one."""
    out = path.parent / out_name
    claimed = _new_staging(out) if path.is_dir() else _new_staging_file(out)
    try:
        os.rename(path, claimed)  # replaces the new, empty folder or file
    except FileNotFoundError:
        _delete(claimed)
        raise
    _delete(claimed)


def _delete(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"


def _new_staging(out_dir: Path, kind: str = "partial") -> Path:
    """A new empty folder `.OUT.KIND-PID@HOST-XXXXXXXX` beside `out_dir`, with a plain new
    folder's mode (0777 less the umask; mkdtemp's 0700 would survive the rename and hide a
    shared corpus or checkpoint from the other users of a cluster)."""
    prefix = f".{out_dir.name}.{kind}-{os.getpid()}@{_host()}-"
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    return staging


def _new_staging_file(out: Path) -> Path:
    """A new empty file `.OUT.partial-PID@HOST-XXXXXXXX` beside `out` (mode 0666 less the
    umask, as a plain new file)."""
    prefix = f".{out.name}.partial-{os.getpid()}@{_host()}-"
    while True:
        path = out.parent / (prefix + secrets.token_hex(4))
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path


@contextlib.contextmanager
def staging_directory(out_dir: str | Path) -> Iterator[Path]:
    """A new, locked sibling folder of `out_dir` named after this writer, removed on exit
    unless the block renamed it away."""
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _new_staging(out_dir)
    with _held(staging):
        yield staging


@contextlib.contextmanager
def _held(staging: Path) -> Iterator[int]:
    """Hold an flock on the new staging folder or file `staging` while the block runs, and
    remove it on exit unless the block renamed it away; yields its descriptor."""
    descriptor = os.open(staging, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # no locks here: the pid and host still protect it
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield descriptor
    finally:
        if staging.exists():
            _delete(staging)
        os.close(descriptor)


@contextlib.contextmanager
def atomic_directory(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out_dir`; rename it into place only if the block succeeds.

    On any error the temporary directory is removed and an existing `out_dir` is left untouched.
    """
    out_dir = prepare_output(out_dir, overwrite)
    with staging_directory(out_dir) as staging:
        yield staging
        if out_dir.exists():
            retired = _new_staging(out_dir, "old")
            os.replace(out_dir, retired)
            os.replace(staging, out_dir)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out_dir)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a new, locked staging file beside `path`; if the block succeeds, flush it to disk
    and rename it onto `path`, so readers see the old file or the new one, never half of one.
    On any error, or if the process is killed, `path` is untouched; the staging file is
    removed, after a kill by the next writer of `path` (see `clear_stale_staging`)."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_staging(path)
    staging = _new_staging_file(path)
    with _held(staging) as descriptor:
        yield staging
        os.fsync(descriptor)
        os.replace(staging, path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through `atomic_file`: readers see old or new, never half."""
    with atomic_file(path) as staging:
        staging.write_text(text, encoding="utf-8")
    return Path(path)
