"""The realised mix of the streams: each stream's share of the trained targets, counted on the
host from the batches' `stream` field (jaxslm.data.packing) and summed over processes.

The stream weights are shares of samples, as slamkit's are of its chunks; these shares are of
tokens, which is what the weights are meant to balance (docs/reference.md section 3).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

STREAM_NAMES = ("text", "interleaved", "speech")


class StreamTokens:
    """Targets per stream since the last `window_shares` call and since the start.

    `gather`: each process holds only its own rows (records sharding over several processes),
    so shares are summed over processes; every process must then call `window_shares` at the
    same steps.
    """

    def __init__(self, gather: bool):
        self.gather = gather
        self.window = np.zeros(len(STREAM_NAMES), np.int64)
        self.total = np.zeros(len(STREAM_NAMES), np.int64)

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Count the targets of one (local) batch by stream."""
        streams = batch["stream"][batch["loss_mask"] > 0]
        self.window += np.bincount(streams, minlength=len(STREAM_NAMES))[: len(STREAM_NAMES)]

    def window_shares(self) -> dict[str, float]:
        """`tokens_<stream>`: shares of the targets since the previous call (then reset)."""
        counts = self.window
        if self.gather and jax.process_count() > 1:
            counts = np.asarray(multihost_utils.process_allgather(counts)).sum(axis=0)
        self.total += counts
        self.window = np.zeros_like(self.window)
        return _shares(counts)

    def state(self) -> dict[str, list[int]]:
        """The counts, JSON-ready, for a checkpoint: a resumed run's records then equal an
        uninterrupted run's."""
        return {"window": self.window.tolist(), "total": self.total.tolist()}

    def set_state(self, state: dict[str, list[int]]) -> None:
        """Take the counts `state` saved."""
        self.window = np.asarray(state["window"], np.int64)
        self.total = np.asarray(state["total"], np.int64)

    def run_summary(self) -> str:
        """The shares over every window reported so far, as one line."""
        shares = _shares(self.total)
        parts = ", ".join(f"{name} {shares[f'tokens_{name}']:.3f}" for name in STREAM_NAMES)
        return f"stream shares of the trained targets: {parts}"


def _shares(counts: np.ndarray) -> dict[str, float]:
    total = int(counts.sum())
    return {
        f"tokens_{name}": int(count) / total if total else float("nan")
        for name, count in zip(STREAM_NAMES, counts, strict=True)
    }
