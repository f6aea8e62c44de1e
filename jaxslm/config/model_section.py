"""The config's `model` section: which decoder a run trains, and how it computes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from jaxslm import backend
from jaxslm.models.model_config import DTYPES, SHAPE_FIELDS, ModelConfig, check_decoder
from jaxslm.models.presets import PRESETS, preset_model_config
from jaxslm.value_checks import one_of

DEFAULT_PRESET = "tiny"
# The keys a preset sets; with model.init the checkpoint gives them.
SHAPE_KEYS = ("family", *SHAPE_FIELDS, "tie_word_embeddings", "max_position_embeddings")
NUMERIC_KEYS = ("param_dtype", "dtype", "remat", "scan_layers", "attention")


@dataclass(frozen=True)
class ModelSection:
    """The decoder. From scratch (`init` unset) it has the shape of `preset` (see
    jaxslm.models.presets; unset: `tiny`), and each shape key set here replaces the preset's
    value. `rope_theta` unset is the preset's, or the checkpoint's with `init`.

    With `init` (a checkpoint dir from `jaxslm-convert import-hf`) the checkpoint gives the
    shape: `preset` and shape keys set to other values than the defaults are ignored, with a
    warning. `rope_theta` (when set), the dtypes, `remat`, `scan_layers` and `attention` (the
    kernel: auto, xla, cudnn, pallas or splash; see jaxslm.backend) apply either way.
    `dtype` (compute) `auto` is bfloat16 on GPUs and TPUs and float32 on CPUs; `param_dtype`
    (the master copy) is float32 unless set."""

    init: str | None = None
    preset: str | None = None
    family: str | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    tie_word_embeddings: bool | None = None
    rope_theta: float | None = None
    max_position_embeddings: int | None = None
    param_dtype: str = "float32"
    dtype: str = "auto"
    remat: str = "none"
    scan_layers: bool = True
    attention: str = "auto"

    def __post_init__(self) -> None:
        if self.preset is not None:
            one_of("model.preset", self.preset, tuple(PRESETS))
        given = {key: getattr(self, key) for key in SHAPE_KEYS if getattr(self, key) is not None}
        if self.init is not None:
            self._warn_ignored(given)
        shape = {**_preset_shape(self.preset or DEFAULT_PRESET), **given}
        for key, value in shape.items():
            object.__setattr__(self, key, value)
        check_decoder(self, "model.", (*DTYPES, "auto"))

    def _warn_ignored(self, given: dict[str, Any]) -> None:
        """Warn about the preset and the shape keys that `init` overrides (a key at its
        default says nothing, as in a config written before presets)."""
        defaults = _preset_shape(DEFAULT_PRESET)
        ignored = [] if self.preset is None else ["model.preset"]
        ignored += [f"model.{key}" for key, value in given.items() if value != defaults[key]]
        if ignored:
            warnings.warn(
                f"{', '.join(ignored)}: ignored, since model.init={self.init} gives the model's "
                "shape; unset them, or unset model.init to train from scratch",
                stacklevel=4,
            )

    def numerics(self) -> dict[str, Any]:
        """The ModelConfig fields of how the decoder computes: dtypes (`dtype: auto` resolved
        for this platform: jaxslm.backend.compute_dtype), remat, scan, kernel."""
        numerics = {key: getattr(self, key) for key in NUMERIC_KEYS}
        if self.dtype == "auto":
            numerics["dtype"] = backend.compute_dtype()
        return numerics

    def scratch_model(self, vocab_size: int) -> ModelConfig:
        """The decoder to train from scratch over `vocab_size` ids: the preset's, with this
        section's shape keys, RoPE theta and numerics."""
        changes = {key: getattr(self, key) for key in SHAPE_KEYS}
        if self.rope_theta is not None:
            changes["rope_theta"] = self.rope_theta
        preset = self.preset or DEFAULT_PRESET
        return preset_model_config(preset, vocab_size, **changes, **self.numerics())

    def applied_to(self, checkpoint: ModelConfig) -> ModelConfig:
        """A checkpoint's decoder with this section's RoPE theta (when set) and numerics."""
        theta = self.rope_theta or checkpoint.rope_theta
        return checkpoint.replace(rope_theta=theta, **self.numerics())


def _preset_shape(name: str) -> dict[str, Any]:
    """The values preset `name` gives the shape keys."""
    return {key: PRESETS[name].architecture[key] for key in SHAPE_KEYS}
