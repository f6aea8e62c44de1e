"""A persistent XLA compilation cache for command-line entry points.

Compiling a jitted program often costs more than running it: a scaling fit takes about 2 s
to compile and 0.15 s to run on CPU, and the tiny training run spends about 10 s of its
start compiling. With the cache, a later process that compiles the same program loads it
from disk instead. It holds at most MAX_BYTES; the least recently used entries go first.

JAX's own settings win. A `JAX_COMPILATION_CACHE_DIR` in the environment keeps its folder,
and `JAXSLM_COMPILATION_CACHE=0` turns the cache off.

JAX's size cap orders entries by an access-time file beside each, which a process without the
cap (a script or notebook sharing the folder) does not write, nor one killed between the two
writes; JAX then fails every later write to the folder. So before capping a local folder,
each entry without one gets an access time: its file's modification time.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import jax

DEFAULT_DIR = Path("~/.cache/jaxslm/xla").expanduser()
MIN_COMPILE_SECONDS = 0.2
MAX_BYTES = 4 << 30
CACHE_SUFFIX, ATIME_SUFFIX = "-cache", "-atime"  # JAX's entry and access-time file names


def enable_compilation_cache() -> None:
    """Cache compiled programs that took at least MIN_COMPILE_SECONDS in DEFAULT_DIR, unless
    the environment configures or disables the cache."""
    if os.environ.get("JAXSLM_COMPILATION_CACHE", "1") == "0":
        return
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(DEFAULT_DIR))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    if jax.config.jax_compilation_cache_max_size > 0:
        add_missing_access_times(jax.config.jax_compilation_cache_dir)


def add_missing_access_times(directory: str) -> None:
    """Give each cache entry of a local `directory` that lacks one an access-time file (its
    modification time), so that JAX's size-capped cache can order and evict it."""
    if "://" in directory or not Path(directory).is_dir():
        return
    for entry in Path(directory).glob(f"*{CACHE_SUFFIX}"):
        key = entry.name.removesuffix(CACHE_SUFFIX)
        atime = entry.with_name(key + ATIME_SUFFIX)
        if atime.exists():
            continue
        # an entry evicted meanwhile, or a read-only folder: JAX reports what it cannot write
        with contextlib.suppress(OSError):
            atime.write_bytes(entry.stat().st_mtime_ns.to_bytes(8, "little"))
