"""The output rows a modality restriction keeps, when computing only those is cheaper than
the whole vocabulary projection (the scorer and generation; see jaxslm.vocab.allowed_tokens)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class RestrictedHead(NamedTuple):
    """The output rows a modality restriction keeps: `ids` [K] (K a multiple of 128, padded
    with repeats that `valid` [K] marks False) and `index` [padded vocab] mapping each id to
    its column in `ids`, or -1 for banned ids."""

    ids: np.ndarray
    valid: np.ndarray
    index: np.ndarray


def restricted_head(allowed: np.ndarray) -> RestrictedHead | None:
    """The rows to compute for the boolean mask `allowed`, or None when it keeps more than
    half of the vocabulary (then the full projection, masked, is cheaper than a gather)."""
    kept = np.flatnonzero(allowed).astype(np.int32)
    if 2 * kept.size > allowed.size:
        return None
    width = max(128, -(-kept.size // 128) * 128)
    ids = np.full(width, kept[0], np.int32)
    ids[: kept.size] = kept
    index = np.full(allowed.size, -1, np.int32)
    index[kept] = np.arange(kept.size, dtype=np.int32)
    return RestrictedHead(ids, np.arange(width) < kept.size, index)
