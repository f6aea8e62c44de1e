"""The key map between HF parameter names and jaxslm parameter paths, with the reshapes that
carry a tensor from one layout to the other.

The names follow a `Naming`: HF's (`HF_NAMING`) or another format's (jaxslm.hf.slm_scaling).
HF Linear weights are [out, in]; jaxslm Dense kernels are [*in_dims, *out_dims] with heads split
out (q: [embed, heads, head_dim], o: [heads, head_dim, embed]). Layer parameters are stacked on
a leading `layers` axis in jaxslm and numbered `model.layers.{i}` in HF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from jaxslm.models.model_config import ModelConfig

KERNEL, FLAT, SAME = "kernel", "flat", "same"


@dataclass(frozen=True)
class ParamMap:
    """One parameter: jaxslm path, HF name (with `{layer}` when stacked) and layout rule."""

    path: tuple[str, ...]
    hf_name: str
    layout: str
    in_ndim: int = 0
    rope_pairs: bool = False

    @property
    def stacked(self) -> bool:
        return "{layer}" in self.hf_name

    @property
    def is_vocab(self) -> bool:
        """Embedding and LM head: their vocabulary rows are resized and padded."""
        return self.path[0] in ("embed", "lm_head")

    def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """HF shape of one (unstacked) jaxslm tensor of `shape`."""
        if self.layout == KERNEL:
            return (math.prod(shape[self.in_ndim :]), math.prod(shape[: self.in_ndim]))
        if self.layout == FLAT:
            return (math.prod(shape),)
        return shape

    def to_jaxslm(self, shape: tuple[int, ...]) -> ToJaxslm:
        """Function: HF tensor -> jaxslm layout of `shape`."""
        return ToJaxslm(self.layout == KERNEL, tuple(shape), self.rope_pairs)

    def to_hf(self, shape: tuple[int, ...]) -> ToHF:
        """Function: jaxslm tensor (one layer) of `shape` -> HF layout."""
        inputs = math.prod(shape[: self.in_ndim])
        return ToHF(self.layout == KERNEL, inputs, self.hf_shape(tuple(shape)))


@dataclass(frozen=True)
class ToJaxslm:
    """HF [out, in] -> jaxslm [*in_dims, *out_dims] (or a plain reshape); with `rope_pairs`
    each head's dimensions (the last axis) go from adjacent-pair to half-split RoPE order.
    Hashable by value so compiled versions are reused. Works on numpy and jax arrays."""

    transpose: bool
    shape: tuple[int, ...]
    rope_pairs: bool = False

    def __call__(self, hf_tensor):
        value = (hf_tensor.T if self.transpose else hf_tensor).reshape(self.shape)
        return value[..., half_split_order(self.shape[-1])] if self.rope_pairs else value


@dataclass(frozen=True)
class ToHF:
    """jaxslm layout -> HF layout; the inverse of ToJaxslm."""

    transpose: bool
    inputs: int
    hf_shape: tuple[int, ...]

    def __call__(self, tensor):
        if self.transpose:
            return tensor.reshape(self.inputs, -1).T
        return tensor.reshape(self.hf_shape)


@dataclass(frozen=True)
class Naming:
    """How a checkpoint format names the decoder's tensors: `names[role]` per role (`{layer}`
    where stacked; bias roles are `<role>_bias`), and whether its q/k rows rotate adjacent
    pairs of each head (`rope_pairs`, llama2.c) rather than HF's two halves."""

    names: dict[str, str]
    rope_pairs: bool = False


_HF_LAYER = "model.layers.{layer}."
HF_NAMING = Naming(
    {
        "embed": "model.embed_tokens.weight",
        "attn_norm": _HF_LAYER + "input_layernorm.weight",
        **{n: _HF_LAYER + f"self_attn.{n}_proj.weight" for n in "qkvo"},
        **{f"{n}_bias": _HF_LAYER + f"self_attn.{n}_proj.bias" for n in "qkvo"},
        "mlp_norm": _HF_LAYER + "post_attention_layernorm.weight",
        **{n: _HF_LAYER + f"mlp.{n}_proj.weight" for n in ("gate", "up", "down")},
        **{f"{n}_bias": _HF_LAYER + f"mlp.{n}_proj.bias" for n in ("gate", "up", "down")},
        "final_norm": "model.norm.weight",
        "lm_head": "lm_head.weight",
    }
)


def param_maps(cfg: ModelConfig, naming: Naming = HF_NAMING) -> list[ParamMap]:
    """Every parameter of `cfg`'s decoder, in HF's canonical order, named by `naming`."""
    names = naming.names
    maps = [ParamMap(("embed", "embedding"), names["embed"], SAME)]
    maps.append(ParamMap(("layers", "attn_norm", "scale"), names["attn_norm"], SAME))
    for name in ("q", "k", "v"):
        rope_pairs = naming.rope_pairs and name in "qk"
        maps.append(
            ParamMap(("layers", "attn", name, "kernel"), names[name], KERNEL, 1, rope_pairs)
        )
        if cfg.qkv_bias:
            bias = names[f"{name}_bias"]
            maps.append(ParamMap(("layers", "attn", name, "bias"), bias, FLAT, 0, rope_pairs))
    maps.append(ParamMap(("layers", "attn", "o", "kernel"), names["o"], KERNEL, 2))
    if cfg.out_bias:
        maps.append(ParamMap(("layers", "attn", "o", "bias"), names["o_bias"], FLAT))
    maps.append(ParamMap(("layers", "mlp_norm", "scale"), names["mlp_norm"], SAME))
    for name in ("gate", "up", "down"):
        maps.append(ParamMap(("layers", "mlp", name, "kernel"), names[name], KERNEL, 1))
        if cfg.mlp_bias:
            maps.append(ParamMap(("layers", "mlp", name, "bias"), names[f"{name}_bias"], FLAT))
    maps.append(ParamMap(("final_norm", "scale"), names["final_norm"], SAME))
    if not cfg.tie_word_embeddings:
        maps.append(ParamMap(("lm_head", "kernel"), names["lm_head"], KERNEL, 1))
    return maps


def half_split_order(head_dim: int) -> np.ndarray:
    """Indices that take a head's dimensions from adjacent-pair RoPE order (pair i = dims
    2i, 2i + 1) to the half-split order of HF and jaxslm (pair i = dims i, i + head_dim / 2)."""
    return np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])
