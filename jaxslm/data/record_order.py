"""Which records a process reads, in which order: each stream's records of this process,
re-shuffled every epoch, and the streams mixed by weight, one block of samples at a time.

Everything is a function of (seed, block number, stream positions), so a pipeline restored
from a position replays exactly what the original did from there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.value_checks import require

STREAMS = ("text", "interleaved", "speech")
SIMS_WEIGHTS = (0.2024, 0.5433, 0.2543)
MIX_KEY = 7_919  # separates the mixing draws from the shuffles


def check_stream_weights(weights: Sequence[float], key: str = "stream_weights") -> None:
    """Refuse stream weights (text, interleaved, speech) that cannot be drawn from: not three,
    one negative, or none positive."""
    require(
        len(weights) == len(STREAMS) and min(weights) >= 0 and sum(weights) > 0,
        key,
        list(weights),
        "must be 3 weights >= 0 (text, interleaved, speech) with a positive sum",
    )


class StreamOrder:
    """Records `process_index::process_count` of one stream (of `size` records, told apart
    from the other streams by `stream`): position p is element p % local of epoch p // local's
    permutation of them."""

    def __init__(
        self,
        size: int,
        seed: int,
        stream: int,
        process_index: int,
        process_count: int,
        num_epochs: int | None,
    ):
        self.seed, self.stream = seed, stream
        self.index, self.count = process_index, process_count
        self.local = len(range(process_index, size, process_count))
        if self.local == 0:
            raise JaxslmError(f"process {process_index} of {process_count} gets no records")
        self.total = None if num_epochs is None else num_epochs * self.local
        self._epoch, self._permutation = -1, np.zeros(0, np.int64)

    def remaining(self, position: int) -> int | None:
        """Positions left after `position` (None: endless)."""
        return None if self.total is None else self.total - position

    def take(self, position: int, count: int) -> list[tuple[int, int]]:
        """(record, epoch) of positions position .. position + count - 1."""
        out = []
        while count > 0:
            epoch, offset = divmod(position, self.local)
            size = min(count, self.local - offset)
            records = self._epoch_order(epoch)[offset : offset + size] * self.count + self.index
            out += [(record, epoch) for record in records.tolist()]
            position, count = position + size, count - size
        return out

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, self.stream, epoch])
            self._epoch, self._permutation = epoch, rng.permutation(self.local)
        return self._permutation


def block_picks(weights: list[float], seed: int, block: int, size: int) -> list[int]:
    """The streams (indices into `weights`) of mixing block `block`'s `size` samples, each
    drawn independently by weight: what slamkit's `interleave_datasets(probabilities=...)`
    does over its context-length chunks (slamkit/data/hf_dataset.py)."""
    live = np.asarray(weights, np.float64)
    rng = np.random.default_rng([seed, MIX_KEY, block])
    return rng.choice(len(live), size=size, p=live / live.sum()).tolist()
