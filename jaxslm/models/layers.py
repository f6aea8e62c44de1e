"""Parameterised building blocks: dense projections, embeddings and RMSNorm.

Every parameter carries its logical axis names as `axes` metadata (see jaxslm.sharding).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def _normal(rngs: nnx.Rngs, shape: Sequence[int], std: float, dtype: jnp.dtype) -> jax.Array:
    return (std * jax.random.normal(rngs.params(), tuple(shape), jnp.float32)).astype(dtype)


class Dense(nnx.Module):
    """y = x . kernel (+ bias), contracting the trailing `in_shape` dims of x.

    The kernel is stored [*in_shape, *out_shape] with logical `axes` for those dims.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        axes: tuple[str, ...],
        *,
        use_bias: bool,
        std: float,
        param_dtype: jnp.dtype,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.in_ndim = len(in_shape)
        self.dtype = dtype
        self.kernel = nnx.Param(_normal(rngs, (*in_shape, *out_shape), std, param_dtype), axes=axes)
        self.bias = (
            nnx.Param(jnp.zeros(tuple(out_shape), param_dtype), axes=axes[self.in_ndim :])
            if use_bias
            else None
        )

    def __call__(self, x: jax.Array, preferred_element_type: jnp.dtype | None = None) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)
        contract_x = tuple(range(x.ndim - self.in_ndim, x.ndim))
        contract_k = tuple(range(self.in_ndim))
        y = jax.lax.dot_general(
            x.astype(self.dtype),
            kernel,
            ((contract_x, contract_k), ((), ())),
            preferred_element_type=preferred_element_type,
        )
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y


class Embed(nnx.Module):
    """Token embedding table [vocab, embed]."""

    def __init__(
        self,
        rows: int,
        width: int,
        *,
        std: float,
        param_dtype: jnp.dtype,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.embedding = nnx.Param(
            _normal(rngs, (rows, width), std, param_dtype), axes=("vocab", "embed")
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], tokens, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied output projection: float32 logits x . embedding^T."""
        table = self.embedding[...].astype(self.dtype)
        return jnp.einsum("...e,ve->...v", x, table, preferred_element_type=jnp.float32)


class RMSNorm(nnx.Module):
    """Root-mean-square norm, statistics in float32, as Llama and Qwen2 compute it."""

    def __init__(self, width: int, *, eps: float, param_dtype: jnp.dtype):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((width,), param_dtype), axes=("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(x.dtype) * normed.astype(x.dtype)
