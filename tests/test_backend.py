"""The XLA flags the trainer adds on CUDA machines: jaxlib accepts every one, the user's own
XLA_FLAGS win, and nothing is added off CUDA or when turned off."""

import os
import subprocess
import sys

import pytest

from jaxslm.backend import GPU_XLA_FLAGS as GPU_FLAGS
from jaxslm.backend import add_gpu_flags


def test_installed_jaxlib_accepts_every_flag():
    """XLA aborts the process on an unknown flag in XLA_FLAGS; the CPU jaxlib parses the GPU
    flags too."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JAX", "XLA"))}
    program = (
        "import os\n"
        "from jaxslm.backend import add_gpu_flags\n"
        "add_gpu_flags(cuda=True)\n"
        "print(os.environ['XLA_FLAGS'])\n"
        "import jax\n"
        "print(float(jax.numpy.ones(2).sum()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    flags, total = result.stdout.splitlines()[:2]
    assert flags.split() == [f"--{name}={value}" for name, value in GPU_FLAGS.items()]
    assert total == "2.0"


def test_user_flags_win_and_are_kept():
    name = next(iter(GPU_FLAGS))
    environ = {"XLA_FLAGS": f"--{name}=false --xla_dump_to=/tmp/x"}
    assert add_gpu_flags(environ, cuda=True) == [f"--{n}={v}" for n, v in GPU_FLAGS.items()][1:]
    assert environ["XLA_FLAGS"].startswith(f"--{name}=false --xla_dump_to=/tmp/x")
    assert environ["XLA_FLAGS"].count(name) == 1


@pytest.mark.parametrize(
    "environ, cuda",
    [
        ({}, False),
        ({"JAX_PLATFORMS": "cpu"}, True),
        ({"JAXSLM_GPU_FLAGS": "0"}, True),
    ],
)
def test_nothing_added_off_cuda_or_when_turned_off(environ, cuda):
    before = dict(environ)
    assert add_gpu_flags(environ, cuda=cuda) == []
    assert environ == before


def test_added_on_cuda():
    environ = {"JAX_PLATFORMS": "cuda"}
    added = add_gpu_flags(environ, cuda=True)
    assert added and environ["XLA_FLAGS"] == " ".join(added)
