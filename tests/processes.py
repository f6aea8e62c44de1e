"""Child processes of the tests: a command killed at a chosen point, on this checkout's jaxslm."""

import os
import subprocess
import sys
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
