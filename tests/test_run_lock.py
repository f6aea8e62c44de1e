"""One training process per run directory: a second one is refused at once, naming the holder;
a lock left by a SIGKILLed process is taken over on its host and refused from another; a run
directory that is a file or cannot be created fails before any work."""

import errno
import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import REPO, command, single_device_env, start_two_processes

from jaxslm.errors import JaxslmError
from jaxslm.training.run_lock import LOCK_FILE, RunLock


@pytest.fixture
def held(tmp_path):
    """A run directory whose lock this (live) process holds."""
    lock = RunLock(tmp_path / "run")
    lock.acquire()
    yield tmp_path / "run"
    lock.release()


def test_second_process_is_refused_with_the_holder_named(held):
    with pytest.raises(JaxslmError) as refused:
        RunLock(held).acquire()
    holder = json.loads((held / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    for detail in (f"pid {os.getpid()}", socket.gethostname(), holder["started"]):
        assert detail in str(refused.value)


def test_release_frees_the_directory(tmp_path):
    first = RunLock(tmp_path / "run")
    first.acquire()
    first.release()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    second = RunLock(tmp_path / "run")
    second.acquire()
    second.release()


def test_lock_of_a_sigkilled_process_is_taken_over_with_a_warning(tmp_path):
    run_dir = tmp_path / "run"
    holder = (
        "import os, signal, sys\n"
        "from jaxslm.training.run_lock import RunLock\n"
        "RunLock(sys.argv[1]).acquire()\n"
        "print(os.getpid(), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", holder, str(run_dir)], cwd=REPO, capture_output=True, text=True
    )
    assert killed.returncode == -9, killed.stderr
    assert (run_dir / LOCK_FILE).is_file()
    lock = RunLock(run_dir)
    with pytest.warns(UserWarning, match=f"pid {killed.stdout.strip()} on .* is gone"):
        lock.acquire()
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_from_another_host_is_refused_with_how_to_clear_it(tmp_path):
    (tmp_path / "run").mkdir()
    stale = {"pid": 4242, "host": "elsewhere.example", "started": "2026-01-01T00:00:00+00:00"}
    (tmp_path / "run" / LOCK_FILE).write_text(json.dumps(stale))
    with pytest.raises(JaxslmError, match=r"pid 4242 on elsewhere.example .*delete .*run.lock"):
        RunLock(tmp_path / "run").acquire()


@pytest.mark.parametrize(
    "run_dir, message",
    [
        ("a_file", "is a file"),
        ("a_file/run", r"cannot be created \(Not a directory\)"),
        ("/sys/jaxslm_test/run", "cannot be created"),  # sysfs refuses mkdir, even to root
    ],
)
def test_run_dir_must_be_a_writable_directory(tmp_path, run_dir, message):
    (tmp_path / "a_file").write_text("")
    if run_dir.startswith("/sys") and not Path("/sys").is_dir():
        pytest.skip("no sysfs")
    with pytest.raises(JaxslmError, match=message):
        RunLock(tmp_path / run_dir).acquire()


def test_cli_refuses_a_locked_run_dir_before_any_work(held, tmp_path):
    corpus = tmp_path / "never_built"
    result = subprocess.run(
        command(corpus, held), cwd=REPO, capture_output=True, text=True, env=single_device_env()
    )
    assert result.returncode == 2, result.stderr
    assert f"is in use by pid {os.getpid()}" in result.stderr
    assert not corpus.exists() and sorted(p.name for p in held.iterdir()) == [LOCK_FILE]


def test_every_process_of_a_distributed_run_is_refused(held, tmp_path):
    """Only process 0 takes the lock; the others learn its answer and stop too."""
    processes = start_two_processes(tmp_path / "never_built", held)
    errors = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [2, 2], errors
    assert f"is in use by pid {os.getpid()}" in errors[0]
    assert "process 0 could not lock it" in errors[1]


def test_without_flock_a_running_pid_holds_the_lock(tmp_path, monkeypatch):
    """File systems without flock (Lustre without -o flock): the pid decides, on its host."""

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    (tmp_path / "run").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    entry = {"pid": holder.pid, "host": socket.gethostname(), "started": "earlier"}
    (tmp_path / "run" / LOCK_FILE).write_text(json.dumps(entry))
    try:
        with pytest.raises(JaxslmError, match=f"in use by pid {holder.pid}"):
            RunLock(tmp_path / "run").acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path / "run")
    with pytest.warns(UserWarning, match=f"pid {holder.pid} .* is gone"):
        lock.acquire()
    lock.release()
