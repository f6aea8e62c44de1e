"""Rotary position embeddings, with the optional `llama3` frequency scaling."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from jaxslm.models.model_config import Llama3RopeScaling


def inverse_frequencies(
    head_dim: int, theta: float, scaling: Llama3RopeScaling | None = None
) -> np.ndarray:
    """Per-pair rotation frequencies [head_dim // 2], float32."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    inv_freq = (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)
    if scaling is not None:
        inv_freq = _llama3_scale(inv_freq, scaling)
    return inv_freq


def _llama3_scale(inv_freq: np.ndarray, scaling: Llama3RopeScaling) -> np.ndarray:
    """Slow down long wavelengths by `factor`, keep short ones, blend the band between."""
    context = scaling.original_max_position_embeddings
    long_wavelen = context / scaling.low_freq_factor
    short_wavelen = context / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    blend = (context / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - blend) * inv_freq / scaling.factor + blend * inv_freq
    scaled = np.where(wavelen > long_wavelen, inv_freq / scaling.factor, inv_freq)
    in_band = (wavelen >= short_wavelen) & (wavelen <= long_wavelen)
    return np.where(in_band, blended, scaled).astype(np.float32)


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, inv_freq: np.ndarray) -> jnp.ndarray:
    """Rotate x [B, T, heads, head_dim] by positions [B, T] (rotate-half layout, as HF)."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)
