"""HF `config.json` <-> ModelConfig for the Llama and Qwen2 families (and slamkit's wrapper)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jaxslm.errors import JaxslmError
from jaxslm.models.model_config import Llama3RopeScaling, ModelConfig, family_biases
from jaxslm.vocab import SpeechVocab

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
SLAMKIT_MODEL_TYPE = "speech_language_model"
SLAMKIT_WEIGHT_PREFIX = "lm."
SPEECH_VOCAB_KEY = "jaxslm_speech_vocab"
SUPPORTED_MESSAGE = (
    "supported: model_type 'llama' (Llama 3.x), 'qwen2' (Qwen2 / Qwen2.5), and slamkit "
    f"'{SLAMKIT_MODEL_TYPE}' checkpoints wrapping one of those; Cuervo & Marxer's 'slm' "
    "checkpoints go through `jaxslm-convert import-slm-scaling`"
)


DEFAULT_CONTEXT = {"llama": 2048, "qwen2": 32768}  # transformers' defaults when unset
HF_NAMES = {  # jaxslm's field names -> config.json's, for messages
    "num_kv_heads": "num_key_value_heads",
    "num_heads": "num_attention_heads",
    "num_layers": "num_hidden_layers",
}
REAL_FIELDS = ("rms_norm_eps", "initializer_range")  # rope_theta: checked where it is read
OPTIONAL_FIELDS = ("num_key_value_heads", "head_dim")  # null: derived from the others
POSITIVE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    *OPTIONAL_FIELDS,
    "max_position_embeddings",
    *REAL_FIELDS,
)


def is_jaxslm_export(directory: Path) -> bool:
    """Whether `directory` holds a HF export of a jaxslm model (its config.json names the
    speech vocabulary)."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and SPEECH_VOCAB_KEY in config


def unwrap_slamkit(hf: dict[str, Any], source: Path) -> dict[str, Any]:
    """The text-LM config inside a slamkit UnitLM config, with slamkit's real vocab size.

    Everything else comes from `base_config` alone, as slamkit's UnitLM builds its LM from
    it: a top-level `rope_theta` (the Slam recipe's override, which UnitLMConfig also keeps
    as an attribute) is not read. Under transformers 4.x the override reached `base_config`
    too; under 5.x it does not, and the model ran with `base_config`'s theta."""
    base = hf.get("base_config")
    if not isinstance(base, dict):
        raise JaxslmError(f"{source}: slamkit config has no 'base_config' dict to build from")
    return {**base, "vocab_size": hf["vocab_size"]}


def model_config_from_hf(hf: dict[str, Any], source: Path, param_dtype: str) -> ModelConfig:
    """ModelConfig of a HF Llama / Qwen2 config dict; anything else is refused."""
    family = hf.get("model_type")
    if family not in ARCHITECTURES:
        raise JaxslmError(f"{source}: model_type {family!r} is not supported; {SUPPORTED_MESSAGE}")
    if hf.get("hidden_act", "silu") != "silu":
        raise JaxslmError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported (silu only)")
    if family == "qwen2" and hf.get("use_sliding_window"):
        raise JaxslmError(f"{source}: use_sliding_window=true is not supported; set it to false")
    _check_numbers(hf, source)
    try:
        heads = hf["num_attention_heads"]
        theta, scaling = _rope(hf, source)
        config = dict(
            family=family,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=hf.get("max_position_embeddings", DEFAULT_CONTEXT[family]),
            **family_biases(family, bool(hf.get("attention_bias", False))),
            mlp_bias=bool(hf.get("mlp_bias", False)),
            initializer_range=hf.get("initializer_range", 0.02),
            param_dtype=param_dtype,
        )
    except KeyError as err:
        raise JaxslmError(f"{source}: required field {err} is missing") from err
    try:
        return ModelConfig(**config)
    except JaxslmError as err:
        message = str(err)
        for ours, theirs in HF_NAMES.items():
            message = message.replace(ours, theirs)
        raise JaxslmError(f"{source}: {message}; fix config.json") from None


def _check_numbers(hf: dict[str, Any], source: Path) -> None:
    """Refuse shape and numeric fields that are present but are not positive numbers (a
    string, null, a negative value), naming the field."""
    for key in POSITIVE_FIELDS:
        if key not in hf or (key in OPTIONAL_FIELDS and hf[key] is None):
            continue
        whole = key not in REAL_FIELDS
        if not _positive(hf[key], whole):
            what = "a whole number" if whole else "a number"
            raise JaxslmError(
                f"{source}: {key} must be {what} > 0, got {hf[key]!r}; fix config.json"
            )


def _positive(value: Any, whole: bool) -> bool:
    """Whether `value` is a positive int (or with `whole` False, a positive int or float)."""
    kind = int if whole else (int, float)
    return not isinstance(value, bool) and isinstance(value, kind) and value > 0


def _rope(hf: dict[str, Any], source: Path) -> tuple[float, Llama3RopeScaling | None]:
    """RoPE theta and llama3 scaling from `rope_parameters` (transformers 5) or `rope_scaling`
    and `rope_theta` (4.x)."""
    key = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"
    params = hf.get(key) or {}
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    if not _positive(theta, whole=False):
        raise JaxslmError(f"{source}: rope_theta must be a number > 0, got {theta!r}")
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return float(theta), None
    if kind != "llama3":
        raise JaxslmError(
            f"{source}: rope type {kind!r} is not supported; supported: none/default and llama3"
        )
    fields = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [name for name in fields if params.get(name) is None]
    if missing:
        raise JaxslmError(f"{source}: {key} of rope type llama3 lacks {', '.join(missing)}")
    return float(theta), Llama3RopeScaling(**{name: params[name] for name in fields})


def hf_architecture(cfg: ModelConfig) -> dict[str, Any]:
    """The HF config.json keys of `cfg`'s architecture, over its `vocab_size` ids: no special
    ids and no dtype (transformers' `AutoConfig.for_model(**keys)` builds it)."""
    hf: dict[str, Any] = {
        "architectures": [ARCHITECTURES[cfg.family]],
        "model_type": cfg.family,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": _rope_scaling_dict(cfg.rope_scaling),
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "initializer_range": cfg.initializer_range,
        "attention_dropout": 0.0,
    }
    if cfg.family == "llama":
        hf.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
    else:
        hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.num_layers)
    return hf


def hf_special_ids(vocab: SpeechVocab) -> dict[str, Any]:
    """The HF config.json keys of the vocabulary's BOS, EOS and pad ids."""
    return {"bos_token_id": vocab.bos_id, "eos_token_id": _eos(vocab), "pad_token_id": vocab.pad_id}


def hf_config_from_model(cfg: ModelConfig, vocab: SpeechVocab, torch_dtype: str) -> dict[str, Any]:
    """A plain HF config.json dict that transformers loads with no custom code."""
    return {
        **hf_architecture(cfg),
        "vocab_size": vocab.size,
        "use_cache": True,
        "torch_dtype": torch_dtype,
        **hf_special_ids(vocab),
        SPEECH_VOCAB_KEY: vocab.to_dict(),
    }


def _rope_scaling_dict(scaling: Llama3RopeScaling | None) -> dict[str, Any] | None:
    if scaling is None:
        return None
    return {
        "rope_type": "llama3",
        "factor": scaling.factor,
        "low_freq_factor": scaling.low_freq_factor,
        "high_freq_factor": scaling.high_freq_factor,
        "original_max_position_embeddings": scaling.original_max_position_embeddings,
    }


def _eos(vocab: SpeechVocab) -> int | list[int] | None:
    if not vocab.eos_ids:
        return None
    return vocab.eos_ids[0] if len(vocab.eos_ids) == 1 else list(vocab.eos_ids)


def generation_config(vocab: SpeechVocab) -> dict[str, Any]:
    """generation_config.json with the vocabulary's special ids."""
    config = {"bos_token_id": vocab.bos_id, "eos_token_id": _eos(vocab)}
    if vocab.pad_id is not None:
        config["pad_token_id"] = vocab.pad_id
    return config
