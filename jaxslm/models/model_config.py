"""Typed description of a decoder: shapes, attention, RoPE, dtypes and how layers run
(`remat`, `scan_layers`, and `attention`: the kernel, see jaxslm.backend)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from jaxslm.backend import ATTENTION_KERNELS
from jaxslm.errors import JaxslmError
from jaxslm.value_checks import one_of, positive, require

VOCAB_MULTIPLE = 128
FAMILIES = ("llama", "qwen2")
REMAT_POLICIES = ("none", "full", "save_dots", "save_projections")
DTYPES = ("float32", "bfloat16")
SHAPE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
)


@dataclass(frozen=True)
class Llama3RopeScaling:
    """The `llama3` frequency scaling of Llama 3.1 / 3.2."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and numerics of a Llama / Qwen2 style decoder.

    `vocab_size` is the real vocabulary; the embedding is padded to `padded_vocab_size`.
    """

    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: Llama3RopeScaling | None = None
    max_position_embeddings: int = 8192
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    initializer_range: float = 0.02
    param_dtype: str = "float32"
    dtype: str = "float32"
    scan_layers: bool = True
    remat: str = "none"
    attention: str = "auto"

    def __post_init__(self) -> None:
        check_decoder(self)
        if self.family == "llama" and self.qkv_bias != self.out_bias:
            raise JaxslmError("llama: qkv_bias and out_bias must match (HF attention_bias)")
        if self.family == "qwen2" and not (self.qkv_bias and not self.out_bias):
            raise JaxslmError("qwen2: q/k/v projections have biases and o does not")

    @property
    def padded_vocab_size(self) -> int:
        """Embedding rows: `vocab_size` rounded up to a multiple of 128."""
        return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_dict` reverses it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ModelConfig:
        """Build from `to_dict` output, refusing unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise JaxslmError(f"unknown model config keys {unknown}; known keys: {sorted(known)}")
        fields = dict(fields)
        if fields.get("rope_scaling") is not None:
            fields["rope_scaling"] = Llama3RopeScaling(**fields["rope_scaling"])
        return cls(**fields)


def family_biases(family: str, attention_bias: bool = False) -> dict[str, bool]:
    """`qkv_bias` and `out_bias` of a family: Qwen2 has q/k/v biases and no o bias; Llama has
    HF's `attention_bias` on all four projections (none in Llama 3)."""
    if family == "qwen2":
        return {"qkv_bias": True, "out_bias": False}
    return {"qkv_bias": attention_bias, "out_bias": attention_bias}


def check_decoder(fields: Any, prefix: str = "", compute_dtypes: tuple[str, ...] = DTYPES) -> None:
    """Refuse a decoder that cannot be built: `fields` has ModelConfig's family, shape, RoPE
    theta, dtype, remat and attention attributes (a ModelConfig, or the training config's model
    section, whose messages name each field `prefix + name`, and whose `dtype` may also be
    `auto`: `compute_dtypes`)."""
    one_of(f"{prefix}family", fields.family, FAMILIES)
    one_of(f"{prefix}attention", fields.attention, ATTENTION_KERNELS)
    one_of(f"{prefix}param_dtype", fields.param_dtype, DTYPES)
    one_of(f"{prefix}dtype", fields.dtype, compute_dtypes)
    one_of(f"{prefix}remat", fields.remat, REMAT_POLICIES)
    positive(fields, prefix, *SHAPE_FIELDS, "rope_theta", "max_position_embeddings")
    require(
        fields.num_heads % fields.num_kv_heads == 0,
        f"{prefix}num_heads",
        fields.num_heads,
        f"must be a multiple of {prefix}num_kv_heads={fields.num_kv_heads}",
    )
    require(fields.head_dim % 2 == 0, f"{prefix}head_dim", fields.head_dim, "must be even (RoPE)")
