"""The attention seam: one call that training, the scorer and generation's prefill make, and
the one place a kernel is dispatched (the choice itself is jaxslm.backend's).

Rows are packed: `segment_ids` [B, T] keep documents apart (0 marks padding), and the
scorer's `branch_ids` let each branch see its segment's trunk and itself only. Every kernel
honours segment ids; a kernel that cannot honour branch ids is not chosen for such calls.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax

from jaxslm import backend
from jaxslm.models.attention_fused import (
    cudnn_attention,
    on_shards,
    pallas_attention,
    splash_attention,
)
from jaxslm.models.attention_xla import xla_attention


class Segments(NamedTuple):
    """Who sees whom in a packed row: segment ids [B, T] (0 = padding) and optional branch
    ids [B, T] (0 = trunk; see jaxslm.evals.sharing)."""

    ids: jax.Array
    branches: jax.Array | None = None


def attention(query, key, value, segments: Segments, *, kernel: str = "auto", causal=True):
    """Softmax attention of query [B,T,H,D] over key/value [B,T,KV,D] (GQA: H a multiple of
    KV) within `segments`, causal by default; `kernel` is `model.attention`. Returns
    [B, T, H, D] in the query's dtype."""
    chosen = backend.attention_kernel(
        kernel,
        dtype=query.dtype,
        head_dim=query.shape[-1],
        length=query.shape[1],
        branches=segments.branches is not None,
    )
    if chosen == "xla":
        return xla_attention(query, key, value, segments.ids, segments.branches, causal)
    if chosen == "cudnn":
        fused = functools.partial(cudnn_attention, causal=causal)
    else:
        run = pallas_attention if chosen == "pallas" else splash_attention
        fused = functools.partial(run, causal=causal, interpret=backend.pallas_interpret())
    return on_shards(fused, query, key, value, segments.ids, segments.branches)
