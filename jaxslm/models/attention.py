"""Grouped-query attention kernels that respect packed-sequence segments."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def segment_causal_mask(segment_ids: jnp.ndarray) -> jnp.ndarray:
    """[B, T, T] bool: query i may see key j iff j <= i and both lie in the same segment."""
    length = segment_ids.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))
    same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
    return causal[None] & same_segment


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
