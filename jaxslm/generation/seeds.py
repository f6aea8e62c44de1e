"""Sampling seeds of the batches of one generation run."""

from __future__ import annotations

import numpy as np


def batch_seed(seed: int, batch: int) -> int:
    """The sampling seed of batch `batch` of a run seeded `seed`. Runs with different seeds
    share no batch's random stream, as `seed + batch` would (seed s's batch 1 would be seed
    s + 1's batch 0)."""
    return int(np.random.SeedSequence([seed % 2**64, batch]).generate_state(1)[0])
