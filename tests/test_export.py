"""export-hf against transformers: the exported directory loads with no custom code and agrees."""

import json

import numpy as np
import pytest
import torch
from tiny_models import llama_config, save_hf_model, torch_logits

import jaxslm
from jaxslm.hf.exporter import export_hf
from jaxslm.hf.importer import import_hf
from jaxslm.hf.safetensors_io import INDEX_FILE, SafetensorsFile
from jaxslm.model_dir import params_as_numpy, read_metadata, restore_params


def _mixed_tokens(lm, length: int, seed: int) -> np.ndarray:
    """Text ids, unit ids and both markers in one batch."""
    rng = np.random.default_rng(seed)
    vocab = lm.vocab
    tokens = rng.integers(0, vocab.size, size=(2, length))
    tokens[:, 1] = vocab.speech_marker_id
    tokens[:, 2:6] = vocab.units_to_ids([0, 5, 12, vocab.num_units - 1])
    tokens[:, 6] = vocab.text_marker_id
    return tokens


@pytest.fixture(scope="module")
def llama_export(llama_ckpt, tmp_path_factory):
    return export_hf(llama_ckpt, tmp_path_factory.mktemp("export") / "llama")


@pytest.fixture(scope="module")
def qwen_export(qwen_ckpt, tmp_path_factory):
    return export_hf(qwen_ckpt, tmp_path_factory.mktemp("export") / "qwen", max_shard_bytes=60_000)


@pytest.mark.parametrize("name", ["llama", "qwen"])
def test_exported_model_loads_and_matches(name, request):
    from transformers import AutoModelForCausalLM

    lm = request.getfixturevalue(f"{name}_lm")
    export = request.getfixturevalue(f"{name}_export")
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    assert model.config.vocab_size == lm.vocab.size
    tokens = _mixed_tokens(lm, 30, seed=4)
    np.testing.assert_allclose(lm.logits(tokens), torch_logits(model, tokens), atol=1e-4, rtol=1e-4)


def test_large_export_is_sharded_like_hf(qwen_export):
    index = json.loads((qwen_export / INDEX_FILE).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (qwen_export / "model.safetensors").exists()


@pytest.mark.parametrize("name", ["llama", "qwen"])
def test_exported_tokenizer_maps_speech_tokens(name, request):
    from transformers import AutoTokenizer

    vocab = request.getfixturevalue(f"{name}_lm").vocab
    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(f"{name}_export"))
    assert len(tokenizer) == vocab.size
    assert tokenizer.convert_tokens_to_ids("<Un12>") == vocab.unit_id(12)
    assert tokenizer.convert_tokens_to_ids("<speech>") == vocab.speech_marker_id
    assert tokenizer.convert_tokens_to_ids("<text>") == vocab.text_marker_id
    ids = tokenizer("<speech><Un12><Un3><text>", add_special_tokens=False)["input_ids"]
    assert ids == [
        vocab.speech_marker_id,
        vocab.unit_id(12),
        vocab.unit_id(3),
        vocab.text_marker_id,
    ]


@pytest.mark.parametrize("name", ["llama", "qwen"])
def test_import_export_import_is_exact(name, request, tmp_path):
    ckpt = request.getfixturevalue(f"{name}_ckpt")
    again = import_hf(request.getfixturevalue(f"{name}_export"), tmp_path / "again")
    cfg, vocab, _ = read_metadata(ckpt)
    cfg2, vocab2, _ = read_metadata(again)
    assert (cfg, vocab) == (cfg2, vocab2)
    first = params_as_numpy(restore_params(ckpt, cfg))
    second = params_as_numpy(restore_params(again, cfg2))
    for path, value in _flatten(first).items():
        np.testing.assert_array_equal(value, _flatten(second)[path], err_msg=str(path))


def _flatten(tree, prefix=()):
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, sub in tree.items() for k, v in _flatten(sub, (*prefix, key)).items()}


def test_bfloat16_stays_bfloat16(llama_hf, tmp_path):
    from transformers import AutoModelForCausalLM

    source = tmp_path / "bf16"
    save_hf_model(llama_config(llama_hf[1].config.vocab_size), source, seed=5, dtype=torch.bfloat16)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (source / name).write_bytes((llama_hf[0] / name).read_bytes())
    ckpt = import_hf(source, tmp_path / "ckpt", speech_units=16)
    assert read_metadata(ckpt)[0].param_dtype == "bfloat16"
    export = export_hf(ckpt, tmp_path / "export")
    dtypes = {
        info.dtype.name for info in SafetensorsFile(export / "model.safetensors").tensors.values()
    }
    assert dtypes == {"bfloat16"}
    # dtype="auto" reads config.json's dtype under transformers 4.x too (5.x defaults to it)
    model = AutoModelForCausalLM.from_pretrained(export, dtype="auto")
    assert model.dtype == torch.bfloat16
    lm = jaxslm.load(ckpt)
    tokens = _mixed_tokens(lm, 12, seed=6)
    reference = torch_logits(model.float(), tokens)
    np.testing.assert_allclose(lm.logits(tokens), reference, atol=1e-4, rtol=1e-4)
