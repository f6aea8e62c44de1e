"""One training process per run directory: RUN_DIR/run.lock.

The holder keeps an exclusive flock on the file while it trains and writes into it who it is
(pid, host, start time); a second process is refused with those details. A process killed
with SIGKILL leaves the file but not the flock: a later process on the same host takes the lock
over with a warning. A file naming another host is refused with how to clear it, since this
host cannot tell whether that process still runs. On a file system without flock (Lustre
mounted without `-o flock`), a holder on this host counts as alive while its pid runs.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from jaxslm.errors import JaxslmError
from jaxslm.training import distributed

LOCK_FILE = "run.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a run's lock."""

    pid: int
    host: str
    started: str

    @classmethod
    def this_process(cls) -> Holder:
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), started)

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host} (started {self.started})"

    def pid_runs(self) -> bool:
        """Whether a process with the holder's pid runs on this host."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class RunLock:
    """The lock of one run directory; `acquire` creates the directory, `release` removes the
    lock file."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise JaxslmError naming the holder (or why the directory cannot
        hold a run)."""
        _make_directory(self.run_dir)
        fd, flocked = self._open_locked()
        try:
            previous = _read_holder(fd)
            if previous is not None:
                self._check_stale(previous, flocked)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(asdict(Holder.this_process())).encode() + b"\n", 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def _open_locked(self) -> tuple[int, bool]:
        """An open descriptor of the lock file, flocked unless the file system has no flock
        (then the second value is False)."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as error:
                raise JaxslmError(
                    f"run_dir={self.run_dir} is not writable ({error.strerror}): choose a "
                    "writable run_dir=PATH"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise self._in_use(holder) from None
            except OSError as error:
                if error.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                    os.close(fd)
                    raise
                return fd, False
            if _same_file(fd, self.path):
                return fd, True
            os.close(fd)  # the previous holder removed the file while we opened it

    def _check_stale(self, previous: Holder, flocked: bool) -> None:
        """Refuse a live or unverifiable holder; warn when taking over a dead one's lock."""
        if previous.host != socket.gethostname():
            raise JaxslmError(
                f"{self.path} names {previous}, which this host cannot check: if that run "
                f"has stopped, delete {self.path} and rerun"
            )
        if not flocked and previous.pid_runs() and previous.pid != os.getpid():
            raise self._in_use(previous)
        warnings.warn(
            f"{self.path}: {previous} is gone (killed?); taking over its run", stacklevel=3
        )

    def _in_use(self, holder: Holder | None) -> JaxslmError:
        return JaxslmError(
            f"run_dir={self.run_dir} is in use by {holder or 'another process'}: wait for that "
            "run to end or stop it, or choose another run_dir=PATH"
        )

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


def _make_directory(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise JaxslmError(f"run_dir={run_dir} is a file: choose a directory as run_dir=PATH")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise JaxslmError(
            f"run_dir={run_dir} cannot be created ({error.strerror}): choose a writable "
            "run_dir=PATH"
        ) from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> Holder | None:
    """The holder recorded in the lock file; None when it is empty or unreadable (a process
    that died, or is about to write, between creating the file and writing it)."""
    try:
        return Holder(**json.loads(os.pread(fd, 4096, 0)))
    except (ValueError, TypeError):
        return None


def lock_run_dir(run_dir: str | Path, primary: bool) -> RunLock:
    """The run directory's lock, taken by the primary process (which alone writes there); when
    it cannot be taken, every process of the run raises JaxslmError."""
    lock = RunLock(run_dir)
    refusal = None
    if primary:
        try:
            lock.acquire()
        except JaxslmError as error:
            refusal = error
    if not distributed.from_primary(refusal is None) and refusal is None:
        refusal = JaxslmError(f"run_dir={run_dir}: process 0 could not lock it (see its error)")
    if refusal is not None:
        raise refusal
    return lock
