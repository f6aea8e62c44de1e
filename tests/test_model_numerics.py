"""Imported models against transformers (PyTorch, CPU) on the same tokens."""

import numpy as np
from conftest import torch_logits


def _random_tokens(high: int, shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, size=shape)


def test_llama_logits_match_transformers(llama_hf, llama_lm):
    _, torch_model = llama_hf
    tokens = _random_tokens(torch_model.config.vocab_size, (2, 96), seed=0)
    ours = llama_lm.logits(tokens)
    theirs = torch_logits(torch_model, tokens)
    text = torch_model.config.vocab_size
    np.testing.assert_allclose(ours[..., :text], theirs, atol=1e-4, rtol=1e-4)


def test_qwen_logits_match_transformers(qwen_hf, qwen_lm):
    _, torch_model = qwen_hf
    tokens = _random_tokens(qwen_lm.vocab.text_size, (2, 40), seed=1)
    ours = qwen_lm.logits(tokens)
    theirs = torch_logits(torch_model, tokens)
    rows = torch_model.config.vocab_size
    np.testing.assert_allclose(ours[..., :rows], theirs, atol=1e-4, rtol=1e-4)


def test_packed_row_equals_documents_alone(llama_lm):
    vocab = llama_lm.vocab.size
    first, second = _random_tokens(vocab, (1, 23), 2), _random_tokens(vocab, (1, 17), 3)
    packed = np.concatenate([first, second, np.zeros((1, 8), int)], axis=1)
    segments = np.array([[1] * 23 + [2] * 17 + [0] * 8])
    positions = np.array([list(range(23)) + list(range(17)) + list(range(8))])
    logits = llama_lm.logits(packed, segment_ids=segments, positions=positions)
    np.testing.assert_allclose(logits[:, :23], llama_lm.logits(first), atol=1e-5)
    np.testing.assert_allclose(logits[:, 23:40], llama_lm.logits(second), atol=1e-5)
    assert np.isfinite(logits).all()
