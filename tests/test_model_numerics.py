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


def _with_config(lm, **changes):
    """The same parameters under a changed ModelConfig (layer execution, dtypes)."""
    from flax import nnx

    from jaxslm.api import SpeechLM
    from jaxslm.models.decoder import abstract_decoder

    graphdef = nnx.graphdef(abstract_decoder(lm.config.replace(**changes)))
    return SpeechLM(nnx.merge(graphdef, nnx.state(lm.model)), lm.vocab)


def test_unrolled_and_rematerialised_layers_agree(llama_lm):
    tokens = _random_tokens(llama_lm.vocab.size, (2, 20), seed=8)
    reference = llama_lm.logits(tokens)
    for changes in ({"scan_layers": False}, {"remat": "full"}, {"remat": "save_dots"}):
        np.testing.assert_allclose(
            _with_config(llama_lm, **changes).logits(tokens),
            reference,
            atol=1e-5,
            err_msg=str(changes),
        )


def test_bfloat16_compute_stays_close(llama_ckpt, llama_lm):
    import jaxslm

    tokens = _random_tokens(llama_lm.vocab.size, (2, 20), seed=9)
    bf16 = jaxslm.load(llama_ckpt, compute_dtype="bfloat16").logits(tokens)
    assert bf16.dtype == np.float32
    reference = llama_lm.logits(tokens)
    assert np.abs(bf16 - reference).max() < 0.05 * np.abs(reference).max()
    assert not np.array_equal(bf16, reference)
