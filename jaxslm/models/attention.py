"""Grouped-query attention kernels that respect packed-sequence segments."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_causal_mask(
    segment_ids: jnp.ndarray, branch_ids: jnp.ndarray | None = None
) -> jnp.ndarray:
    """[B, T, T] bool: query i may see key j iff j <= i and both lie in the same segment; with
    `branch_ids` [B, T], also only if j lies in the segment's trunk (branch 0) or in i's own
    branch (see jaxslm.evals.sharing)."""
    length = segment_ids.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))
    mask = causal[None] & (segment_ids[:, :, None] == segment_ids[:, None, :])
    if branch_ids is None:
        return mask
    key_branch = branch_ids[:, None, :]
    return mask & ((key_branch == 0) | (key_branch == branch_ids[:, :, None]))


CAUSAL_CHUNK = 128


def causal_attention(
    query: jnp.ndarray, key: jnp.ndarray, value: jnp.ndarray, mask: jnp.ndarray
) -> jnp.ndarray:
    """`dot_product_attention` for a causal `mask` (no query sees a later key), in query
    chunks of CAUSAL_CHUNK that each read only the keys up to their last query.

    The masked-out upper triangle is never computed, and each chunk's float32 scores stay
    small enough for the CPU's caches. Measured once on the 2-core CPU VM (2026-11-22), the
    forward pass of a 20M model ran 1.6x as fast on rows of 1024 tokens (5.0k against 3.1k
    tokens/s) and 2.2x on rows of 2048 (3.2k against 1.5k), and 4-17% faster on rows of 384
    and 448. The result is the same up to float rounding.
    """
    length = query.shape[1]
    if length <= CAUSAL_CHUNK:
        return dot_product_attention(query, key, value, mask)
    chunks = []
    for start in range(0, length, CAUSAL_CHUNK):
        end = min(start + CAUSAL_CHUNK, length)
        chunks.append(
            dot_product_attention(
                query[:, start:end], key[:, :end], value[:, :end], mask[:, start:end, :end]
            )
        )
    return jnp.concatenate(chunks, axis=1)


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
    batch, length, heads, head_dim = query.shape
    kv_heads = key.shape[kv_layout.index("k")]
    grouped = query.reshape(batch, length, kv_heads, heads // kv_heads, head_dim)
    scores = jnp.einsum(
        f"btkgd,{kv_layout}->bkgts", grouped, key, preferred_element_type=jnp.float32
    ) / jnp.sqrt(jnp.float32(head_dim))
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
    out = jnp.einsum(f"bkgts,{kv_layout}->btkgd", probs, value)
    return out.reshape(batch, length, heads, head_dim)
