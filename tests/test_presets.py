"""The preset registry: its vocabularies, and its HF config keys read back by the importer's
config map (the published sizes are checked in test_flops.py)."""

from pathlib import Path

import pytest

from jaxslm.errors import JaxslmError
from jaxslm.hf.config_map import model_config_from_hf
from jaxslm.models.presets import (
    PRESETS,
    hf_config_kwargs,
    speech_model_config,
    speech_vocab,
    text_model_config,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_hf_keys_read_back_as_the_same_model(name):
    speech = speech_model_config(name, 500)
    keys = hf_config_kwargs(name, 500)
    assert model_config_from_hf(keys, Path(name), "float32") == speech
    if not PRESETS[name].speech_only:
        text = hf_config_kwargs(name)
        assert model_config_from_hf(text, Path(name), "float32") == text_model_config(name)


def test_vocabularies():
    qwen = speech_vocab("qwen0.5b", 500)
    assert (qwen.mode, qwen.unit_id(0), qwen.size) == ("interleaved", 151665, 151665 + 502)
    assert (qwen.bos_id, qwen.eos_ids) == (151643, (151643,))
    assert speech_vocab("qwen0.5b", 500, "speech-only").size == 502
    assert hf_config_kwargs("20m", 500)["bos_token_id"] == 1
    assert text_model_config("qwen0.5b").qkv_bias and not text_model_config("llama1b").qkv_bias
    with pytest.raises(JaxslmError, match="speech-only: it has no text model"):
        text_model_config("20m")
    with pytest.raises(JaxslmError, match="has no interleaved vocabulary"):
        speech_vocab("20m", 500, "interleaved")
    with pytest.raises(JaxslmError, match="is not one of tiny, small"):
        speech_vocab("gpt2", 500)
