"""Counting XLA compilations: a call that compiles again what an earlier call of the same
shapes compiled costs seconds per call on a GPU (issue 21)."""

import contextlib
from collections.abc import Iterator

import jax

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
CACHE_LOAD = "/jax/compilation_cache/cache_retrieval_time_sec"  # a hit (the session's cache)


@contextlib.contextmanager
def backend_compiles() -> Iterator[list[str]]:
    """A list that grows by one entry per device program made inside the block: compiled by
    XLA, or loaded from the persistent compilation cache the tests share (conftest.py)."""
    seen: list[str] = []

    def listen(event: str, duration: float, **_) -> None:
        if event in (BACKEND_COMPILE, CACHE_LOAD):
            seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
