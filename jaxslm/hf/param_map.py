"""The key map between HF parameter names and jaxslm parameter paths, with the reshapes that
carry a tensor from one layout to the other.

HF Linear weights are [out, in]; jaxslm Dense kernels are [*in_dims, *out_dims] with heads split
out (q: [embed, heads, head_dim], o: [heads, head_dim, embed]). Layer parameters are stacked on
a leading `layers` axis in jaxslm and numbered `model.layers.{i}` in HF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jaxslm.models.model_config import ModelConfig

KERNEL, FLAT, SAME = "kernel", "flat", "same"


@dataclass(frozen=True)
class ParamMap:
    """One parameter: jaxslm path, HF name (with `{layer}` when stacked) and layout rule."""

    path: tuple[str, ...]
    hf_name: str
    layout: str
    in_ndim: int = 0

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
        return ToJaxslm(self.layout == KERNEL, tuple(shape))

    def to_hf(self, shape: tuple[int, ...]) -> ToHF:
        """Function: jaxslm tensor (one layer) of `shape` -> HF layout."""
        inputs = math.prod(shape[: self.in_ndim])
        return ToHF(self.layout == KERNEL, inputs, self.hf_shape(tuple(shape)))


@dataclass(frozen=True)
class ToJaxslm:
    """HF [out, in] -> jaxslm [*in_dims, *out_dims] (or a plain reshape); hashable by value so
    compiled versions are reused. Works on numpy and jax arrays."""

    transpose: bool
    shape: tuple[int, ...]

    def __call__(self, hf_tensor):
        return (hf_tensor.T if self.transpose else hf_tensor).reshape(self.shape)


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


def param_maps(cfg: ModelConfig) -> list[ParamMap]:
    """Every parameter of `cfg`'s decoder, in HF's canonical order."""
    layer = "model.layers.{layer}."
    maps = [ParamMap(("embed", "embedding"), "model.embed_tokens.weight", SAME)]
    maps.append(ParamMap(("layers", "attn_norm", "scale"), layer + "input_layernorm.weight", SAME))
    for name in ("q", "k", "v"):
        maps.append(
            ParamMap(
                ("layers", "attn", name, "kernel"),
                layer + f"self_attn.{name}_proj.weight",
                KERNEL,
                1,
            )
        )
        if cfg.qkv_bias:
            maps.append(
                ParamMap(
                    ("layers", "attn", name, "bias"), layer + f"self_attn.{name}_proj.bias", FLAT
                )
            )
    maps.append(
        ParamMap(("layers", "attn", "o", "kernel"), layer + "self_attn.o_proj.weight", KERNEL, 2)
    )
    if cfg.out_bias:
        maps.append(
            ParamMap(("layers", "attn", "o", "bias"), layer + "self_attn.o_proj.bias", FLAT)
        )
    maps.append(
        ParamMap(("layers", "mlp_norm", "scale"), layer + "post_attention_layernorm.weight", SAME)
    )
    for name in ("gate", "up", "down"):
        maps.append(
            ParamMap(
                ("layers", "mlp", name, "kernel"), layer + f"mlp.{name}_proj.weight", KERNEL, 1
            )
        )
        if cfg.mlp_bias:
            maps.append(
                ParamMap(("layers", "mlp", name, "bias"), layer + f"mlp.{name}_proj.bias", FLAT)
            )
    maps.append(ParamMap(("final_norm", "scale"), "model.norm.weight", SAME))
    if not cfg.tie_word_embeddings:
        maps.append(ParamMap(("lm_head", "kernel"), "lm_head.weight", KERNEL, 1))
    return maps
