"""A persistent XLA compilation cache for command-line entry points.

Compiling a jitted program often costs more than running it (a scaling fit: about 2 s to
compile, 0.15 s to run on CPU). With the cache, a later process that compiles the same program
loads it from disk instead. JAX's own settings win: a `JAX_COMPILATION_CACHE_DIR` in the
environment keeps its folder, and `JAXSLM_COMPILATION_CACHE=0` turns the cache off.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

DEFAULT_DIR = Path("~/.cache/jaxslm/xla").expanduser()
MIN_COMPILE_SECONDS = 0.2


def enable_compilation_cache() -> None:
    """Cache compiled programs that took at least MIN_COMPILE_SECONDS in DEFAULT_DIR, unless
    the environment configures or disables the cache."""
    if os.environ.get("JAXSLM_COMPILATION_CACHE", "1") == "0":
        return
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(DEFAULT_DIR))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
