"""slamkit checkpoints (UnitLM: `lm.`-prefixed weights, nested base config) import and agree."""

import copy
import json

import numpy as np
import pytest
from safetensors.torch import save_file
from tiny_models import qwen_config, randomize, torch_logits

import jaxslm
from jaxslm.errors import JaxslmError
from jaxslm.hf.importer import import_hf


def _save_slamkit(model, base_config: dict, directory, **top_level) -> None:
    """Write `model` the way slamkit's UnitLM.save_pretrained does."""
    directory.mkdir()
    tied = model.config.tie_word_embeddings
    state = {
        f"lm.{k}": v.contiguous()
        for k, v in model.state_dict().items()
        if not (tied and k == "lm_head.weight")
    }
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["UnitLM"],
        "model_type": "speech_language_model",
        "base_model_name": "some/base-model",
        "twist_init": True,
        "use_cache": False,
        "base_config": {**base_config, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1},
        "vocab_size": model.config.vocab_size,
        **top_level,
    }
    (directory / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("base_theta", [10000.0, 1e6])
def test_speech_only_slam_checkpoint(tmp_path, base_theta):
    """The Slam recipe: Qwen2 base, K + 2 rows, `rope_theta: 10000` among its config_args.
    UnitLMConfig keeps that at top level; the LM is built from `base_config`, which holds
    10000 where transformers 4.x applied the override and the base's 1e6 where 5.x did not."""
    from transformers import AutoModelForCausalLM

    units = 30
    oracle = AutoModelForCausalLM.from_config(qwen_config(units + 2)).eval()
    oracle.config.rope_parameters["rope_theta"] = base_theta
    oracle = AutoModelForCausalLM.from_config(oracle.config).eval()
    randomize(oracle, seed=11)
    base = qwen_config(352).to_dict()
    base["rope_parameters"] = {**base["rope_parameters"], "rope_theta": base_theta}
    _save_slamkit(oracle, base, tmp_path / "slam", rope_theta=10000)
    lm = jaxslm.load(import_hf(tmp_path / "slam", tmp_path / "ckpt"))  # K inferred: rows - 2
    assert lm.vocab == jaxslm.SpeechVocab.speech_only(units)
    assert lm.config.rope_theta == base_theta
    tokens = np.array([[1, 2, 7, 31, 9, 1], [1, 30, 4, 4, 2, 1]])
    np.testing.assert_allclose(
        lm.logits(tokens), torch_logits(oracle, tokens), atol=1e-4, rtol=1e-4
    )


@pytest.fixture(scope="module")
def interleaved_slamkit(llama_hf, tmp_path_factory):
    """The tiny Llama resized by transformers to len(tokenizer) + 20 + 2, saved as slamkit does."""
    directory, model = llama_hf
    resized = copy.deepcopy(model)
    base = model.config.to_dict()
    resized.resize_token_embeddings(model.config.vocab_size + 22)
    path = tmp_path_factory.mktemp("slamkit") / "sims"
    _save_slamkit(resized, base, path)
    return path, resized


def test_interleaved_slamkit_checkpoint(interleaved_slamkit, llama_hf, tmp_path):
    path, oracle = interleaved_slamkit
    ckpt = import_hf(path, tmp_path / "ckpt", speech_units=20, tokenizer_dir=llama_hf[0])
    inferred = import_hf(path, tmp_path / "inferred", tokenizer_dir=llama_hf[0])
    assert jaxslm.load(inferred).vocab == jaxslm.load(ckpt).vocab
    lm = jaxslm.load(ckpt)
    assert lm.vocab.mode == "interleaved" and lm.vocab.size == oracle.config.vocab_size
    assert lm.vocab.bos_id == 0, "text BOS from the tokenizer, not slamkit's unit-tokeniser id 1"
    tokens = np.array(
        [
            [
                0,
                lm.vocab.speech_marker_id,
                *lm.vocab.units_to_ids([3, 19, 0]),
                lm.vocab.text_marker_id,
                40,
                41,
            ]
        ]
    )
    np.testing.assert_allclose(
        lm.logits(tokens), torch_logits(oracle, tokens), atol=1e-4, rtol=1e-4
    )
    assert (
        json.loads((ckpt / "tokenizer" / "tokenizer.json").read_text())["added_tokens"][-1][
            "content"
        ]
        == "<text>"
    )


def test_slamkit_units_that_disagree_with_the_weights(interleaved_slamkit, llama_hf, tmp_path):
    with pytest.raises(JaxslmError, match="slamkit weights have"):
        import_hf(
            interleaved_slamkit[0], tmp_path / "ckpt", speech_units=500, tokenizer_dir=llama_hf[0]
        )
    assert not (tmp_path / "ckpt").exists()
