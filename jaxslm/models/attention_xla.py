"""Attention in plain XLA ops: grouped-query softmax attention in float32 under an explicit
boolean mask, and the causal form in query chunks that never computes the upper triangle.
It runs everywhere and honours any mask; the CPU uses it by default (see jaxslm.backend)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

CAUSAL_CHUNK = 128


def visible(
    query_segments: jnp.ndarray,
    key_segments: jnp.ndarray,
    query_branches: jnp.ndarray | None = None,
    key_branches: jnp.ndarray | None = None,
    query_offset: int = 0,
    causal: bool = True,
) -> jnp.ndarray:
    """[B, T, S] bool: query i (at position `query_offset` + i of the row) may see key j iff
    both lie in the same segment and, when `causal`, j <= that position; with branch ids
    (see jaxslm.evals.sharing), also only if j lies in the trunk (branch 0) or in i's own
    branch."""
    mask = query_segments[:, :, None] == key_segments[:, None, :]
    if causal:
        rows = query_offset + jnp.arange(query_segments.shape[1])
        mask &= jnp.arange(key_segments.shape[1])[None, None, :] <= rows[None, :, None]
    if query_branches is None:
        return mask
    key_branch = key_branches[:, None, :]
    return mask & ((key_branch == 0) | (key_branch == query_branches[:, :, None]))


def segment_causal_mask(
    segment_ids: jnp.ndarray, branch_ids: jnp.ndarray | None = None
) -> jnp.ndarray:
    """[B, T, T] bool: the whole row's `visible` mask for segment ids (and branch ids) [B, T]."""
    return visible(segment_ids, segment_ids, branch_ids, branch_ids)


def xla_attention(
    query: jnp.ndarray,
    key: jnp.ndarray,
    value: jnp.ndarray,
    segment_ids: jnp.ndarray,
    branch_ids: jnp.ndarray | None = None,
    causal: bool = True,
) -> jnp.ndarray:
    """Attention of query [B,T,H,D] over key/value [B,T,KV,D] within segments [B, T].

    Causal attention runs in query chunks of CAUSAL_CHUNK that each read only the keys up to
    their last query, with each chunk's mask built from the segment ids: the upper triangle is
    never computed, no [B, T, T] mask is held, and each chunk's float32 scores stay small
    enough for the CPU's caches. Measured once on the 2-core CPU VM (2026-11-22), the forward
    pass of a 20M model ran 1.6x as fast on rows of 1024 tokens and 2.2x on rows of 2048 as
    with the whole [T, T] scores.
    """
    length = query.shape[1]
    grouped, keys, values = _head_major(query, key, value, "bskd")
    if not causal:
        mask = visible(segment_ids, segment_ids, branch_ids, branch_ids, causal=False)
        return _token_major(_attend(grouped, keys, values, mask), query.shape)
    chunks = []
    for start in range(0, length, CAUSAL_CHUNK):
        end = min(start + CAUSAL_CHUNK, length)
        branches = (
            (None, None) if branch_ids is None else (branch_ids[:, start:end], branch_ids[:, :end])
        )
        mask = visible(
            segment_ids[:, start:end], segment_ids[:, :end], *branches, query_offset=start
        )
        chunks.append(
            _attend(grouped[:, :, :, start:end], keys[:, :, :end], values[:, :, :end], mask)
        )
    return _token_major(jnp.concatenate(chunks, axis=3), query.shape)


def dot_product_attention(
    query: jnp.ndarray,
    key: jnp.ndarray,
    value: jnp.ndarray,
    mask: jnp.ndarray,
    kv_layout: str = "bskd",
) -> jnp.ndarray:
    """Softmax attention in float32 over query [B,T,H,D], key/value [B,S,KV,D] (`kv_layout`
    "bskd") or [B,KV,S,D] ("bksd": the KV cache's layout, which each head reads contiguously)
    and mask [B,T,S]. Query heads are grouped over the KV heads (GQA); returns [B, T, H, D].
    """
    grouped, keys, values = _head_major(query, key, value, kv_layout)
    return _token_major(_attend(grouped, keys, values, mask), query.shape)


def _head_major(query, key, value, kv_layout: str):
    """Query [B,T,H,D] as [B,KV,G,T,D] and keys/values as [B,KV,S,D]: transposed once, so the
    score and value products of every query chunk read contiguous [T, D] and [S, D] blocks
    (transposing inside each chunk made attention's gradient about 1.5x slower on the CPU)."""
    batch, length, heads, head_dim = query.shape
    kv_heads = key.shape[kv_layout.index("k")]
    grouped = query.reshape(batch, length, kv_heads, heads // kv_heads, head_dim)
    grouped = grouped.transpose(0, 2, 3, 1, 4)
    if kv_layout == "bskd":
        key, value = key.transpose(0, 2, 1, 3), value.transpose(0, 2, 1, 3)
    return grouped, key, value


def _token_major(out: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    """[B,KV,G,T,D] attention outputs back to [B,T,H,D]."""
    return out.transpose(0, 3, 1, 2, 4).reshape(shape)


def _attend(grouped, keys, values, mask):
    """Head-major attention: [B,KV,G,T,D] queries over [B,KV,S,D] keys and values, mask [B,T,S].

    The G query heads of a KV head form one [G*T, D] block, so both products are batched
    GEMMs over (B, KV). The softmax's division comes after the value product ([T, D]
    divisions, not [T, S]), and its maximum, which the result does not depend on, carries no
    gradient.
    """
    batch, kv_heads, groups, length, head_dim = grouped.shape
    rows = grouped.reshape(batch, kv_heads, groups * length, head_dim)
    scores = jnp.einsum("bkqd,bksd->bkqs", rows, keys, preferred_element_type=jnp.float32)
    scores = scores.reshape(batch, kv_heads, groups, length, -1) / jnp.sqrt(jnp.float32(head_dim))
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    peak = jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True))
    weights = jnp.exp(scores - peak)
    out = jnp.einsum(
        "bkqs,bksd->bkqd",
        weights.astype(values.dtype).reshape(batch, kv_heads, groups * length, -1),
        values,
        preferred_element_type=jnp.float32,
    ).reshape(grouped.shape)
    return (out / weights.sum(axis=-1, keepdims=True)).astype(values.dtype)
