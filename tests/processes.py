"""Child processes of the tests: a command killed at a chosen point, on this checkout's jaxslm."""

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def kill_once_writing(script: str, argv: list[str]) -> None:
    """Run `python -c script *argv` on this checkout's jaxslm until it prints a line starting
    with 'writing', then SIGKILL it, so it cannot clean up after itself."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", script, *argv]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        assert any(line.startswith(b"writing") for line in process.stdout)  # among TFDS's lines
    finally:
        process.kill()
        process.wait(timeout=60)


def signal_once_saved(
    command: list[str], checkpoint: Path, signum: int, env: dict[str, str]
) -> tuple[int, str]:
    """Run `command` from the checkout, send `signum` once the directory `checkpoint` exists
    (or after 120 s); (return code, output)."""
    process = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    while not checkpoint.is_dir() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signum)
    output = process.communicate(timeout=120)[0]
    assert checkpoint.is_dir(), output
    return process.returncode, output
