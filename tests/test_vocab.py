"""Speech vocabulary layouts and new-row initialisation, against transformers' resize."""

import numpy as np
import pytest
import torch

from jaxslm.errors import JaxslmError
from jaxslm.hf.row_init import resize_rows
from jaxslm.model_dir import params_as_numpy, read_metadata, restore_params
from jaxslm.vocab import SpeechVocab


def test_interleaved_layout_starts_after_the_tokenizer():
    vocab = SpeechVocab("interleaved", text_size=151665, num_units=500)
    assert vocab.unit_id(0) == 151665 and vocab.unit_id(499) == 152164
    assert (vocab.speech_marker_id, vocab.text_marker_id, vocab.size) == (152165, 152166, 152167)
    assert vocab.added_tokens()[:2] == ["<Un0>", "<Un1>"]
    assert vocab.added_tokens()[-2:] == ["<speech>", "<text>"]
    ids = [5, vocab.unit_id(3), vocab.speech_marker_id, vocab.text_marker_id]
    assert vocab.modality(ids).tolist() == [0, 1, 2, 2]


def test_speech_only_layout():
    vocab = SpeechVocab.speech_only(500)
    assert vocab.size == 502 and vocab.unit_id(0) == 2 and vocab.unit_id(499) == 501
    assert vocab.added_tokens()[:3] == ["<PAD>", "<S>", "<Un0>"]
    assert (vocab.bos_id, vocab.eos_ids, vocab.pad_id) == (1, (1,), 0)
    assert vocab.modality([0, 1, 2, 501]).tolist() == [2, 2, 1, 1]
    with pytest.raises(JaxslmError, match="interleaved"):
        _ = vocab.speech_marker_id
    with pytest.raises(JaxslmError, match=r"\[0, 500\)"):
        vocab.units_to_ids([500])


def _torch_resized(weight: np.ndarray, new_rows: int) -> np.ndarray:
    """transformers' resize_token_embeddings (mean_resizing=True) on an embedding matrix."""
    from transformers import LlamaConfig, LlamaForCausalLM

    rows, width = weight.shape
    config = LlamaConfig(
        vocab_size=rows,
        hidden_size=width,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(torch.from_numpy(weight))
    model.resize_token_embeddings(new_rows)
    return model.get_input_embeddings().weight.detach().numpy()


@pytest.mark.parametrize("rows", [200, 12])
def test_new_rows_follow_transformers_resize(rows):
    old = np.random.default_rng(0).normal(0.3, 0.5, size=(rows, 16)).astype(np.float32)
    ours = resize_rows(old, rows + 7, "mean_cov", seed=0)
    theirs = _torch_resized(old, rows + 7)
    np.testing.assert_array_equal(ours[:rows], theirs[:rows])
    np.testing.assert_allclose(ours[rows:], theirs[rows:], atol=1e-3)
    if rows < 16:  # rank-deficient covariance: both fall back to the exact mean
        np.testing.assert_allclose(ours[rows:], np.broadcast_to(old.mean(0), (7, 16)), atol=1e-6)


def test_mean_cov_rows_have_transformers_spread():
    """Many new `mean_cov` rows: their covariance is 1e-9 x that of the old rows, the
    distribution transformers' resize_token_embeddings draws from (its noise is far below the
    tolerance of a row-by-row comparison)."""
    old = np.random.default_rng(2).normal(0.3, 0.5, size=(200, 16))
    new = resize_rows(old, 200 + 4000, "mean_cov", seed=1)[200:]
    np.testing.assert_allclose(new.mean(0), old.mean(0), atol=1e-5)
    want = 1e-9 * np.cov(old, rowvar=False)
    np.testing.assert_allclose(np.diag(np.cov(new, rowvar=False)), np.diag(want), rtol=0.15)


def test_resize_is_deterministic_and_truncates():
    old = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    assert np.array_equal(
        resize_rows(old, 60, "normal", seed=3), resize_rows(old, 60, "normal", seed=3)
    )
    assert not np.array_equal(
        resize_rows(old, 60, "normal", seed=3), resize_rows(old, 60, "normal", seed=4)
    )
    np.testing.assert_allclose(
        resize_rows(old, 60, "mean")[50:], np.broadcast_to(old.mean(0), (10, 8)), atol=1e-6
    )
    np.testing.assert_array_equal(resize_rows(old, 20), old[:20])


def test_qwen_import_keeps_spare_rows_and_samples_the_rest(qwen_hf, qwen_ckpt):
    """As transformers: ids below the old vocab_size keep their rows; rows past it are new."""
    _, torch_model = qwen_hf
    old_rows = torch_model.config.vocab_size
    cfg, vocab, _ = read_metadata(qwen_ckpt)
    params = params_as_numpy(restore_params(qwen_ckpt, cfg))
    embedding = params["embed"]["embedding"]
    head = params["lm_head"]["kernel"].T
    old_embedding = torch_model.get_input_embeddings().weight.detach().numpy()
    old_head = torch_model.get_output_embeddings().weight.detach().numpy()
    assert vocab.unit_offset < old_rows < vocab.size
    np.testing.assert_array_equal(embedding[:old_rows], old_embedding)
    np.testing.assert_array_equal(head[:old_rows], old_head)
    np.testing.assert_allclose(
        embedding[old_rows : vocab.size],
        _torch_resized(old_embedding, vocab.size)[old_rows:],
        atol=1e-3,
    )
    assert not embedding[vocab.size :].any() and not head[vocab.size :].any()


def test_speech_only_import_truncates_rows(qwen_hf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import jaxslm
    from jaxslm.hf.exporter import export_hf
    from jaxslm.hf.importer import import_hf

    directory, torch_model = qwen_hf
    ckpt = import_hf(directory, tmp_path / "ckpt", speech_units=30, mode="speech-only")
    cfg, vocab, _ = read_metadata(ckpt)
    assert vocab.size == cfg.vocab_size == 32
    params = params_as_numpy(restore_params(ckpt, cfg))
    old_embedding = torch_model.get_input_embeddings().weight.detach().numpy()
    old_head = torch_model.get_output_embeddings().weight.detach().numpy()
    np.testing.assert_array_equal(params["embed"]["embedding"][:32], old_embedding[:32])
    np.testing.assert_array_equal(params["lm_head"]["kernel"].T[:32], old_head[:32])

    export = export_hf(ckpt, tmp_path / "export")
    tokenizer = AutoTokenizer.from_pretrained(export)
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<PAD>", "<S>", "<Un0>", "<Un29>")] == [
        0,
        1,
        2,
        31,
    ]
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == 1
    assert len(tokenizer) == 32, "no token beyond the model's rows (Qwen2Tokenizer's default unk)"
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    tokens = np.array([[1, 2, 9, 31, 5, 1]])
    with torch.no_grad():
        reference = model(torch.as_tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(jaxslm.load(ckpt).logits(tokens), reference, atol=1e-4, rtol=1e-4)


def test_cuervo_marxer_layout():
    """Units first, then <S> (their EOS, K) and <PAD> (K + 1), as their scaling configs'
    vocabulary 502 (slm_scaling configs/scaling/README.md); the tokenizer agrees."""
    from jaxslm.text_tokenizer import speech_only_tokenizer

    vocab = SpeechVocab.speech_only(500, "cuervo-marxer")
    assert (vocab.size, vocab.unit_offset, vocab.bos_id, vocab.eos_ids, vocab.pad_id) == (
        502,
        0,
        500,
        (500,),
        501,
    )
    assert SpeechVocab.from_dict(vocab.to_dict()) == vocab
    assert vocab.modality([0, 499, 500, 501]).tolist() == [1, 1, 2, 2]
    tokenizer = speech_only_tokenizer(vocab).tokenizer
    assert [tokenizer.token_to_id(t) for t in ("<Un0>", "<Un499>", "<S>", "<PAD>")] == [
        0,
        499,
        500,
        501,
    ]
    assert SpeechVocab.speech_only(500, "cuervo-marxer", pad=False).size == 501
    with pytest.raises(JaxslmError, match="layout"):
        SpeechVocab.speech_only(500, "other")
