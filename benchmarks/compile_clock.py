"""Compilation time of JAX, for benchmarks that report it apart from their timed calls.

Benchmarks run as scripts (`python benchmarks/NAME.py`), so they import this module as
`compile_clock` from their own folder.
"""

from __future__ import annotations

import jax


class CompileClock:
    """Seconds JAX spent tracing, lowering and compiling, and backend compiles, since `take()`."""

    EVENTS = (
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )

    def __init__(self):
        self.seconds, self.compiles = 0.0, 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **_) -> None:
        if event in self.EVENTS:
            self.seconds += duration
            self.compiles += event == self.EVENTS[-1]

    def take(self) -> tuple[float, int]:
        """(seconds, backend compiles) since the last call, and start counting afresh."""
        taken = self.seconds, self.compiles
        self.seconds, self.compiles = 0.0, 0
        return taken
