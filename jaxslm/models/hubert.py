"""The HuBERT speech encoder in Flax NNX: 16 kHz audio -> hidden states of one layer.

Numbers match transformers' `HubertModel` for both layouts it supports: the base layout
(GroupNorm on the first conv, post-norm layers) and the large "stable layer norm" layout
(LayerNorm in every conv, pre-norm layers, final LayerNorm). The positional convolution is
weight-normalised (folded into a plain kernel at import) or, as in mHuBERT-25Hz, preceded by
BatchNorm (`conv_pos_batch_norm`).

A zero-padded batch gives each utterance exactly the features it gets alone: frame counts come
from each input length, the first conv's GroupNorm counts valid frames only, padded frames are
zero at the positional convolution's input, and attention ignores padded keys.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxslm.errors import JaxslmError
from jaxslm.models.attention_xla import dot_product_attention
from jaxslm.models.layers import Dense

SAMPLE_RATE = 16_000
INIT_STD = 0.02
ACTIVATIONS = {
    "gelu": partial(jax.nn.gelu, approximate=False),
    "gelu_new": partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}
FEAT_EXTRACT_NORMS = ("group", "layer")
DTYPES = ("float32", "bfloat16")
TORCH_NORM_EPS = 1e-5  # GroupNorm, conv LayerNorm and BatchNorm use torch's default eps


@dataclass(frozen=True)
class HubertConfig:
    """Shapes and layout of a HuBERT encoder (the fields of a HF `config.json`)."""

    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    feat_proj_layer_norm: bool = True
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    conv_pos_batch_norm: bool = False
    do_stable_layer_norm: bool = False
    param_dtype: str = "float32"
    dtype: str = "float32"

    @classmethod
    def from_hf(cls, hf: dict[str, Any], source: str = "config.json") -> HubertConfig:
        """Read a HF HuBERT `config.json` dict; unsupported variants raise naming the field."""
        if hf.get("model_type", "hubert") != "hubert":
            _refuse(source, "model_type", hf["model_type"], "a HuBERT config (model_type hubert)")
        if hf.get("adapter_attn_dim") is not None:
            _refuse(source, "adapter_attn_dim", hf["adapter_attn_dim"], "null (no adapters)")
        defaults = cls()
        renamed = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads"}
        values = {}
        for field in dataclasses.fields(cls):
            if field.name in ("param_dtype", "dtype"):
                continue
            value = hf.get(renamed.get(field.name, field.name), getattr(defaults, field.name))
            values[field.name] = tuple(value) if isinstance(value, list) else value
        cfg = cls(**values)
        cfg.check(source)
        return cfg

    def check(self, source: str = "HubertConfig") -> None:
        """Raise JaxslmError naming the first field this implementation does not support."""
        if self.feat_extract_norm not in FEAT_EXTRACT_NORMS:
            _refuse(source, "feat_extract_norm", self.feat_extract_norm, FEAT_EXTRACT_NORMS)
        for name in ("feat_extract_activation", "hidden_act"):
            if getattr(self, name) not in ACTIVATIONS:
                _refuse(source, name, getattr(self, name), tuple(ACTIVATIONS))
        for name in ("conv_kernel", "conv_stride"):
            if len(getattr(self, name)) != len(self.conv_dim):
                _refuse(source, name, getattr(self, name), f"{len(self.conv_dim)} entries")
        if not self.conv_dim:
            _refuse(source, "conv_dim", self.conv_dim, "at least one conv layer")
        if self.hidden_size % self.num_heads:
            _refuse(source, "num_attention_heads", self.num_heads, "a divisor of hidden_size")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            _refuse(
                source,
                "num_conv_pos_embedding_groups",
                self.num_conv_pos_embedding_groups,
                "a divisor of hidden_size",
            )
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in DTYPES:
                _refuse(source, name, getattr(self, name), DTYPES)

    def replace(self, **changes: Any) -> HubertConfig:
        return dataclasses.replace(self, **changes)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def samples_per_frame(self) -> int:
        return math.prod(self.conv_stride)

    @property
    def frame_seconds(self) -> float:
        """Seconds between output frames: product of conv strides / 16 kHz."""
        return self.samples_per_frame / SAMPLE_RATE

    def num_frames(self, num_samples: int) -> int:
        """Output frames for `num_samples` input samples (the conv length formula)."""
        for kernel, stride in zip(self.conv_kernel, self.conv_stride, strict=True):
            num_samples = max((num_samples - kernel) // stride + 1, 0)
        return num_samples


def _refuse(source: str, field: str, value: Any, supported: Any) -> None:
    raise JaxslmError(f"{source}: HuBERT field {field}={value!r} is not supported; use {supported}")


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], dtype: str) -> jax.Array:
    return (INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


def conv1d(
    x: jax.Array,
    kernel: jax.Array,
    stride: int,
    padding: str | Sequence[tuple[int, int]],
    groups: int = 1,
) -> jax.Array:
    """x [B, T, C_in] * kernel [width, C_in / groups, C_out] -> [B, T', C_out]."""
    return jax.lax.conv_general_dilated(
        x,
        kernel.astype(x.dtype),
        window_strides=(stride,),
        padding=padding,
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=groups,
    )


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis with scale and bias, statistics in float32."""

    def __init__(self, width: int, *, eps: float, param_dtype: str):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((width,), param_dtype), axes=(None,))
        self.bias = nnx.Param(jnp.zeros((width,), param_dtype), axes=(None,))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        centered = x32 - jnp.mean(x32, axis=-1, keepdims=True)
        variance = jnp.mean(centered * centered, axis=-1, keepdims=True)
        normed = centered * jax.lax.rsqrt(variance + self.eps)
        return (normed * self.scale[...] + self.bias[...]).astype(x.dtype)


class MaskedGroupNorm(nnx.Module):
    """torch GroupNorm with one group per channel: statistics over each channel's valid frames."""

    def __init__(self, width: int, *, param_dtype: str):
        self.scale = nnx.Param(jnp.ones((width,), param_dtype), axes=(None,))
        self.bias = nnx.Param(jnp.zeros((width,), param_dtype), axes=(None,))

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x [B, T, C], mask [B, T] of valid frames."""
        x32 = x.astype(jnp.float32)
        valid = mask[..., None]
        count = jnp.maximum(jnp.sum(valid, axis=1, keepdims=True, dtype=jnp.float32), 1.0)
        # where(), not a multiply by a float mask: the same sums, many times faster on XLA:CPU.
        mean = jnp.sum(jnp.where(valid, x32, 0.0), axis=1, keepdims=True) / count
        centered = x32 - mean
        variance = jnp.sum(jnp.where(valid, centered * centered, 0.0), axis=1, keepdims=True)
        variance = variance / count
        normed = centered * jax.lax.rsqrt(variance + TORCH_NORM_EPS)
        return (normed * self.scale[...] + self.bias[...]).astype(x.dtype)


class BatchNorm(nnx.Module):
    """Inference-mode BatchNorm1d over channels (running statistics)."""

    def __init__(self, width: int, *, param_dtype: str):
        self.scale = nnx.Param(jnp.ones((width,), param_dtype), axes=(None,))
        self.bias = nnx.Param(jnp.zeros((width,), param_dtype), axes=(None,))
        self.mean = nnx.BatchStat(jnp.zeros((width,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((width,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        inv = jax.lax.rsqrt(self.var[...] + TORCH_NORM_EPS) * self.scale[...]
        return ((x.astype(jnp.float32) - self.mean[...]) * inv + self.bias[...]).astype(x.dtype)


class ConvBlock(nnx.Module):
    """One feature-extractor layer: strided conv -> norm (if any) -> activation."""

    def __init__(self, cfg: HubertConfig, index: int, rngs: nnx.Rngs):
        c_in = 1 if index == 0 else cfg.conv_dim[index - 1]
        c_out, width = cfg.conv_dim[index], cfg.conv_kernel[index]
        self.stride = cfg.conv_stride[index]
        self.activation = cfg.feat_extract_activation
        self.kernel = nnx.Param(
            _normal(rngs, (width, c_in, c_out), cfg.param_dtype), axes=(None,) * 3
        )
        self.bias = (
            nnx.Param(jnp.zeros((c_out,), cfg.param_dtype), axes=(None,)) if cfg.conv_bias else None
        )
        norm: LayerNorm | MaskedGroupNorm | None = None
        if cfg.feat_extract_norm == "layer":
            norm = LayerNorm(c_out, eps=TORCH_NORM_EPS, param_dtype=cfg.param_dtype)
        elif index == 0:
            norm = MaskedGroupNorm(c_out, param_dtype=cfg.param_dtype)
        self.norm = norm

    def __call__(self, x: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[B, T, C_in] with valid lengths [B] -> [B, T', C_out] and the new valid lengths."""
        width = self.kernel.shape[0]
        x = conv1d(x, self.kernel[...], self.stride, "VALID")
        if self.bias is not None:
            x = x + self.bias[...].astype(x.dtype)
        lengths = jnp.maximum((lengths - width) // self.stride + 1, 0)
        if isinstance(self.norm, MaskedGroupNorm):
            x = self.norm(x, jnp.arange(x.shape[1])[None, :] < lengths[:, None])
        elif self.norm is not None:
            x = self.norm(x)
        return ACTIVATIONS[self.activation](x), lengths


class PositionalConv(nnx.Module):
    """Grouped "same" convolution over time whose output is added to the frames.

    An even kernel drops the last output frame (transformers' SamePad); BatchNorm, when used,
    runs first and padded frames are zeroed after it, as a lone utterance sees zero padding.
    """

    def __init__(self, cfg: HubertConfig, rngs: nnx.Rngs):
        width, hidden = cfg.num_conv_pos_embeddings, cfg.hidden_size
        self.groups = cfg.num_conv_pos_embedding_groups
        self.activation = cfg.feat_extract_activation
        shape = (width, hidden // self.groups, hidden)
        self.kernel = nnx.Param(_normal(rngs, shape, cfg.param_dtype), axes=(None,) * 3)
        self.bias = nnx.Param(jnp.zeros((hidden,), cfg.param_dtype), axes=(None,))
        self.batch_norm = (
            BatchNorm(hidden, param_dtype=cfg.param_dtype) if cfg.conv_pos_batch_norm else None
        )

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        if self.batch_norm is not None:
            x = jnp.where(mask[..., None], self.batch_norm(x), 0)
        width = self.kernel.shape[0]
        padding = ((width // 2, width // 2 - (1 - width % 2)),)
        y = conv1d(x, self.kernel[...], 1, padding, self.groups) + self.bias[...].astype(x.dtype)
        return ACTIVATIONS[self.activation](y)


class EncoderLayer(nnx.Module):
    """Transformer layer: post-norm (base) or pre-norm (`do_stable_layer_norm`)."""

    def __init__(self, cfg: HubertConfig, rngs: nnx.Rngs):
        e, h, d, m = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size
        dense = partial(
            Dense,
            use_bias=True,
            std=INIT_STD,
            param_dtype=jnp.dtype(cfg.param_dtype),
            dtype=jnp.dtype(cfg.dtype),
            rngs=rngs,
        )
        self.stable = cfg.do_stable_layer_norm
        self.activation = cfg.hidden_act
        self.q = dense((e,), (h, d), ("embed", "heads", "head_dim"))
        self.k = dense((e,), (h, d), ("embed", "heads", "head_dim"))
        self.v = dense((e,), (h, d), ("embed", "heads", "head_dim"))
        self.o = dense((h, d), (e,), ("heads", "head_dim", "embed"))
        self.ffn_in = dense((e,), (m,), ("embed", "mlp"))
        self.ffn_out = dense((m,), (e,), ("mlp", "embed"))
        self.attn_norm = LayerNorm(e, eps=cfg.layer_norm_eps, param_dtype=cfg.param_dtype)
        self.ffn_norm = LayerNorm(e, eps=cfg.layer_norm_eps, param_dtype=cfg.param_dtype)

    def attention(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
        out = dot_product_attention(self.q(x), self.k(x), self.v(x), key_mask[:, None, :])
        return self.o(out)

    def ffn(self, x: jax.Array) -> jax.Array:
        return self.ffn_out(ACTIVATIONS[self.activation](self.ffn_in(x)))

    def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
        if self.stable:
            x = x + self.attention(self.attn_norm(x), key_mask)
            return x + self.ffn(self.ffn_norm(x))
        x = self.attn_norm(x + self.attention(x, key_mask))
        return self.ffn_norm(x + self.ffn(x))


class HubertEncoder(nnx.Module):
    """Audio [B, N] with valid lengths [B] -> hidden states [B, T, hidden] of one layer.

    `layers` holds every EncoderLayer's parameters stacked on a leading axis; only the layers
    up to the requested one run.
    """

    def __init__(self, cfg: HubertConfig, rngs: nnx.Rngs):
        cfg.check()
        self.config = cfg
        self.conv_layers = nnx.List([ConvBlock(cfg, i, rngs) for i in range(len(cfg.conv_dim))])
        self.feature_norm = (
            LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps, param_dtype=cfg.param_dtype)
            if cfg.feat_proj_layer_norm
            else None
        )
        self.projection = Dense(
            (cfg.conv_dim[-1],),
            (cfg.hidden_size,),
            (None, "embed"),
            use_bias=True,
            std=INIT_STD,
            param_dtype=jnp.dtype(cfg.param_dtype),
            dtype=jnp.dtype(cfg.dtype),
            rngs=rngs,
        )
        self.pos_conv = PositionalConv(cfg, rngs)
        self.encoder_norm = LayerNorm(
            cfg.hidden_size, eps=cfg.layer_norm_eps, param_dtype=cfg.param_dtype
        )

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=0, out_axes=0)
        def make_layers(rngs: nnx.Rngs) -> EncoderLayer:
            return EncoderLayer(cfg, rngs)

        self.layers = make_layers(rngs)

    def __call__(self, waves: jax.Array, lengths: jax.Array, layer: int | None = None) -> jax.Array:
        """transformers' `hidden_states[layer]` of each utterance, zero-padded to [B, T, hidden].

        Index 0 is the input of the first transformer layer (after the encoder LayerNorm in the
        base layout; without any LayerNorm in the stable layout), index L the output of layer L.
        As in transformers 5, the stable layout's final LayerNorm is not part of any
        `hidden_states` entry; `layer=None` gives `last_hidden_state`, which includes it.
        Utterance i has `config.num_frames(lengths[i])` valid frames; the rest is padding.
        """
        cfg = self.config
        if layer is not None and not 0 <= layer <= cfg.num_layers:
            raise JaxslmError(f"HuBERT layer {layer} does not exist; use 0..{cfg.num_layers}")
        precision = "highest" if cfg.dtype == "float32" else "default"
        with jax.default_matmul_precision(precision):
            x, mask = self.input_states(waves, lengths)
            depth = cfg.num_layers if layer is None else layer
            graphdef, state = nnx.split(self.layers)

            def run_layer(h: jax.Array, layer_state: Any) -> tuple[jax.Array, None]:
                return nnx.merge(graphdef, layer_state)(h, mask), None

            if depth:
                x, _ = jax.lax.scan(run_layer, x, jax.tree.map(lambda a: a[:depth], state))
            if layer is None and cfg.do_stable_layer_norm:
                x = self.encoder_norm(x)
        return x

    def input_states(self, waves: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`hidden_states[0]` [B, T, hidden] and the valid-frame mask [B, T]."""
        x = waves.astype(self.config.dtype)[..., None]
        for block in self.conv_layers:
            x, lengths = block(x, lengths)
        mask = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
        if self.feature_norm is not None:
            x = self.feature_norm(x)
        x = jnp.where(mask[..., None], self.projection(x), 0)
        x = x + self.pos_conv(x, mask)
        if not self.config.do_stable_layer_norm:
            x = self.encoder_norm(x)
        return x, mask


def abstract_hubert(cfg: HubertConfig) -> HubertEncoder:
    """A HubertEncoder whose parameters are shape/dtype placeholders (no memory, no compute)."""
    return nnx.eval_shape(lambda: HubertEncoder(cfg, nnx.Rngs(0)))
