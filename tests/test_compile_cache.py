"""The CLIs' persistent compilation cache: it stores compiled programs under ~/.cache/jaxslm
or where `JAX_COMPILATION_CACHE_DIR` says, and `JAXSLM_COMPILATION_CACHE=0` turns it off.
Each case runs in a fresh process with HOME in a temporary folder, since JAX sets its cache up
once per process."""

import os
import subprocess
import sys

import pytest

PROGRAM = """
import jax
from jaxslm.compile_cache import MAX_BYTES, enable_compilation_cache
enable_compilation_cache()
jax.jit(lambda x: x * 2 + 1)(1.0).block_until_ready()
print(jax.config.jax_compilation_cache_max_size == MAX_BYTES)
"""


@pytest.mark.parametrize(
    "settings, where",
    [
        ({}, ".cache/jaxslm/xla"),
        ({"JAX_COMPILATION_CACHE_DIR": "{home}/mine"}, "mine"),
        ({"JAXSLM_COMPILATION_CACHE": "0"}, None),
    ],
)
def test_where_the_cache_goes(tmp_path, settings, where):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JAX", "XLA"))}
    env.update({key: value.format(home=tmp_path) for key, value in settings.items()})
    env.update(HOME=str(tmp_path), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True
    )
    stored = {str(path.parent.relative_to(tmp_path)) for path in tmp_path.rglob("*-cache")}
    assert stored == ({where} if where else set()), result.stderr
    assert result.stdout.strip() == str(where is not None)


def test_entries_written_without_the_size_cap_do_not_break_it(tmp_path):
    """A script sharing the folder without the cap writes no access-time files; JAX's capped
    cache then failed every write ("Error writing persistent compilation cache entry"). The
    commands give such entries access times first, and their own programs are stored."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JAX", "XLA"))}
    folder = tmp_path / "shared"
    env.update(
        JAX_COMPILATION_CACHE_DIR=str(folder), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0"
    )
    plain = "import jax; jax.jit(lambda x: x * 3 - 1)(1.0).block_until_ready()"
    subprocess.run([sys.executable, "-c", plain], env=env, check=True)
    assert len(list(folder.glob("*-cache"))) == 1 and not list(folder.glob("*-atime"))
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True
    )
    assert "Error writing" not in result.stderr, result.stderr
    entries = {path.name.removesuffix("-cache") for path in folder.glob("*-cache")}
    assert len(entries) == 2
    assert entries == {path.name.removesuffix("-atime") for path in folder.glob("*-atime")}
