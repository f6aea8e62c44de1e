"""Named decoder presets: the published text LMs jaxslm starts from and the speech-only shapes of
the benchmarks, each in one place for configs (`model.preset`), benchmarks and tests.

A preset is a text LM's architecture with its tokenizer's length and special ids, or a
speech-only model's architecture. From it come the ModelConfig of the text model, the speech
vocabulary and ModelConfig for K units (interleaved over the tokenizer as slamkit extends it,
or speech-only), and HF config keys for transformers (through jaxslm.hf.config_map).

    name       what                                                       vocabulary
    tiny       a 2-layer test shape; the training config's default shape  speech-only
    small      a 4-layer CPU benchmark shape                              toy text LM, 522 ids
    20m, 85m,  Cuervo & Marxer's speech-only ladder (docs/reference.md 4) speech-only
    155m, 309m,
    823m
    qwen0.5b   Qwen2.5-0.5B                                               151,665 tokenizer ids
    llama1b    Llama-3.2-1B                                               128,256 tokenizer ids

The ladder's shapes are their TransformerLM's (github tiagoCuervo/slm_scaling,
src/slm/model.py and configs/scaling/*.json): head_dim 64, the embedding tied to the output,
MLP width int(8d/3) rounded up to a multiple of 256, RoPE theta 10,000, RMSNorm eps 1e-5 and
2,050 positions (their `block_size`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jaxslm.errors import JaxslmError
from jaxslm.hf.config_map import hf_architecture, hf_special_ids
from jaxslm.models.model_config import Llama3RopeScaling, ModelConfig, family_biases
from jaxslm.vocab import SpeechVocab


@dataclass(frozen=True)
class Preset:
    """A decoder's architecture (ModelConfig fields other than the vocabulary size, the biases
    that follow the family, and the numerics); for a text LM also its embedding rows, its
    tokenizer's length (where speech units start) and its config's BOS and EOS ids."""

    architecture: Mapping[str, Any]
    text_vocab_size: int | None = None
    tokenizer_size: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None

    @property
    def speech_only(self) -> bool:
        """Whether the preset has no text model (its vocabulary is `<PAD>`, `<S>` and units)."""
        return self.text_vocab_size is None


def _shape(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, **more):
    """An architecture: a Llama with head_dim 64, untied, RoPE theta 10,000, unless `more` says
    otherwise."""
    return {
        "family": "llama",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_layers": layers,
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": 64,
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "max_position_embeddings": 2048,
        **more,
    }


def _ladder(width: int, layers: int, intermediate: int) -> dict[str, Any]:
    """A rung of Cuervo & Marxer's ladder: heads of 64, tied, 2,050 positions."""
    heads = width // 64
    return _shape(
        width,
        intermediate,
        layers,
        heads,
        heads,
        tie_word_embeddings=True,
        max_position_embeddings=LADDER_CONTEXT,
    )


LADDER_CONTEXT = 2050  # their block_size: 2,050 tokens per sequence
PRESETS: dict[str, Preset] = {
    "tiny": Preset(_shape(64, 192, 2, 4, 2, head_dim=16, tie_word_embeddings=True)),
    "small": Preset(_shape(256, 768, 4, 4, 2), text_vocab_size=522, tokenizer_size=522),
    **{
        name: Preset(_ladder(width, layers, mlp))
        for name, width, layers, mlp in (
            ("20m", 512, 6, 1536),
            ("85m", 768, 12, 2048),
            ("155m", 1024, 12, 2816),
            ("309m", 1024, 24, 2816),
            ("823m", 2048, 16, 5632),
        )
    },
    "qwen0.5b": Preset(
        _shape(
            896,
            4864,
            24,
            14,
            2,
            family="qwen2",
            tie_word_embeddings=True,
            rms_norm_eps=1e-6,
            rope_theta=1e6,
            max_position_embeddings=32768,
        ),
        text_vocab_size=151936,
        tokenizer_size=151665,
        bos_id=151643,
        eos_id=151643,
    ),
    "llama1b": Preset(
        _shape(
            2048,
            8192,
            16,
            32,
            8,
            tie_word_embeddings=True,
            rope_theta=500000.0,
            rope_scaling=Llama3RopeScaling(
                factor=32.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=8192,
            ),
            max_position_embeddings=131072,
        ),
        text_vocab_size=128256,
        tokenizer_size=128256,
        bos_id=128000,
        eos_id=128001,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset `name`; an unknown name is refused with the list of presets."""
    if name not in PRESETS:
        raise JaxslmError(f"model preset {name!r} is not one of {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_model_config(name: str, vocab_size: int, **changes: Any) -> ModelConfig:
    """The preset's decoder over `vocab_size` ids, with `changes` to any ModelConfig field (the
    biases follow the resulting family)."""
    fields = {**get_preset(name).architecture, **changes}
    return ModelConfig(vocab_size=vocab_size, **family_biases(fields["family"]), **fields)


def text_model_config(name: str, **changes: Any) -> ModelConfig:
    """The text LM of preset `name` as published (its embedding rows included)."""
    preset = get_preset(name)
    if preset.speech_only:
        raise JaxslmError(f"model preset {name!r} is speech-only: it has no text model")
    return preset_model_config(name, preset.text_vocab_size, **changes)


def speech_vocab(name: str, num_units: int, mode: str | None = None) -> SpeechVocab:
    """The vocabulary of preset `name` extended with `num_units` units: `interleaved` (after the
    text tokenizer, with both markers; the default for text LMs) or `speech-only`."""
    preset = get_preset(name)
    mode = mode or ("speech-only" if preset.speech_only else "interleaved")
    if mode == "speech-only":
        return SpeechVocab.speech_only(num_units)
    if preset.speech_only or mode != "interleaved":
        raise JaxslmError(f"model preset {name!r} has no {mode} vocabulary")
    eos_ids = () if preset.eos_id is None else (preset.eos_id,)
    return SpeechVocab(mode, preset.tokenizer_size, num_units, preset.bos_id, eos_ids)


def speech_model_config(
    name: str, num_units: int, mode: str | None = None, **changes: Any
) -> ModelConfig:
    """The decoder of preset `name` over `speech_vocab(name, num_units, mode)`."""
    return preset_model_config(name, speech_vocab(name, num_units, mode).size, **changes)


def hf_config_kwargs(
    name: str, num_units: int | None = None, mode: str | None = None, **changes: Any
) -> dict[str, Any]:
    """HF config.json keys of preset `name` (`AutoConfig.for_model(**keys)`): the text LM with
    its special ids when `num_units` is None, else the speech model with its vocabulary's."""
    preset = get_preset(name)
    if num_units is None:
        model = text_model_config(name, **changes)
        eos_ids = () if preset.eos_id is None else (preset.eos_id,)
        vocab = SpeechVocab("text", preset.tokenizer_size, 0, preset.bos_id, eos_ids)
    else:
        vocab = speech_vocab(name, num_units, mode)
        model = preset_model_config(name, vocab.size, **changes)
    return {**hf_architecture(model), **hf_special_ids(vocab)}
