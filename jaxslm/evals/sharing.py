"""Work the Scorer does once for several sequences: duplicates merged, shared prefixes as trunks.

A pair of StoryCloze sequences whose context was tokenized on its own (text StoryCloze, the
cross-modal settings) begins with the same few hundred tokens. Such sequences become one
`Item`: a trunk holding the shared prefix but its last token, then one branch per sequence
holding the rest of it from that last shared token on. Each branch attends to the trunk and to
itself only, and its positions continue the trunk's, so every branch token sees exactly the
context it has in its own sequence: the repeated last shared token has the hidden state of the
trunk's end, and predicts the branch's first own token. The trunk's targets (the last one
included, which every branch shares) count once for each sequence of the item.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

MIN_SHARED = 16
MAX_BRANCHES = 8


@dataclasses.dataclass(frozen=True)
class Item:
    """Tokens packed and scored together: the `trunk`, whose target log-probabilities count for
    every sequence in `owners`, then `branches` of (sequence index, tokens), each counting for
    its own sequence."""

    trunk: np.ndarray
    owners: tuple[int, ...]
    branches: tuple[tuple[int, np.ndarray], ...] = ()

    @property
    def size(self) -> int:
        return self.trunk.size + sum(tokens.size for _, tokens in self.branches)


def plan_items(
    arrays: Sequence[np.ndarray], min_shared: int = MIN_SHARED, max_branches: int = MAX_BRANCHES
) -> tuple[list[Item], np.ndarray]:
    """Items that score every distinct sequence of `arrays` once, and the index of each
    sequence's distinct copy [N]; items' owners are those distinct indices.

    Distinct sequences are sorted lexicographically, so sequences with a common prefix lie
    side by side; each joins its predecessor's item while the item keeps at least `min_shared`
    common tokens, holds at most `max_branches` sequences and gets shorter in all.
    """
    distinct_of: dict[bytes, int] = {}
    distinct: list[np.ndarray] = []
    copy_of = np.empty(len(arrays), np.int64)
    for index, array in enumerate(arrays):
        key = array.tobytes()
        if key not in distinct_of:
            distinct_of[key] = len(distinct)
            distinct.append(array)
        copy_of[index] = distinct_of[key]
    order = sorted(range(len(distinct)), key=lambda i: distinct[i].tolist())
    groups: list[tuple[list[int], int]] = []  # (members, tokens all of them share)
    for index in order:
        if groups:
            members, shared = groups[-1]
            common = min(shared, _common_prefix(distinct[members[0]], distinct[index]))
            lengths = [distinct[m].size for m in members]
            if (
                common >= min_shared
                and len(members) < max_branches
                and _cost(lengths + [distinct[index].size], common)
                < _cost(lengths, shared) + distinct[index].size
            ):
                groups[-1] = (members + [index], common)
                continue
        groups.append(([index], distinct[index].size))
    return [_item(distinct, members, shared) for members, shared in groups], copy_of


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    limit = min(a.size, b.size)
    differ = np.flatnonzero(a[:limit] != b[:limit])
    return int(differ[0]) if differ.size else limit


def _cost(lengths: list[int], shared: int) -> int:
    """Tokens an item of sequences of `lengths` sharing `shared` leading tokens holds."""
    if len(lengths) == 1:
        return lengths[0]
    return sum(lengths) - (len(lengths) - 1) * (shared - 1)


def _item(distinct: list[np.ndarray], members: list[int], shared: int) -> Item:
    if len(members) == 1:
        return Item(distinct[members[0]], (members[0],))
    trunk = distinct[members[0]][: shared - 1]
    branches = tuple((m, distinct[m][shared - 1 :]) for m in members)
    return Item(trunk, tuple(members), branches)
