"""Imported models against transformers (PyTorch, CPU) on the same tokens."""

import numpy as np
from tiny_models import torch_logits, with_config


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
    """The same parameters under a changed ModelConfig (layer execution, dtypes, kernel)."""
    return with_config(lm, **changes)


def test_unrolled_and_rematerialised_layers_agree(llama_lm):
    tokens = _random_tokens(llama_lm.vocab.size, (2, 20), seed=8)
    reference = llama_lm.logits(tokens)
    for changes in (
        {"scan_layers": False},
        {"remat": "full"},
        {"remat": "save_dots"},
        {"remat": "save_projections"},
    ):
        np.testing.assert_allclose(
            _with_config(llama_lm, **changes).logits(tokens),
            reference,
            atol=1e-5,
            err_msg=str(changes),
        )


def _loss_and_saved(lm, tokens):
    """(gradient of the summed logits, the residuals the backward pass keeps, as printed by
    `jax.ad_checkpoint.print_saved_residuals`)."""
    import contextlib
    import io

    import jax
    from flax import nnx

    graphdef, params = nnx.split(lm.model)
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    segments = np.ones_like(tokens)

    def loss(params):
        return nnx.merge(graphdef, params)(tokens, positions, segments).mean()

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        jax.ad_checkpoint.print_saved_residuals(loss, params)
    return jax.grad(loss)(params), printed.getvalue()


def test_remat_policies_keep_gradients_and_save_what_they_name(llama_lm):
    import jax

    tokens = _random_tokens(llama_lm.vocab.size, (2, 20), seed=10)
    cfg = llama_lm.config
    reference, _ = _loss_and_saved(llama_lm, tokens)
    saved = {}
    for remat in ("full", "save_dots", "save_projections"):
        grads, saved[remat] = _loss_and_saved(_with_config(llama_lm, remat=remat), tokens)
        for ours, theirs in zip(jax.tree.leaves(grads), jax.tree.leaves(reference), strict=True):
            np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg=remat)
    stacked = f"f32[{cfg.num_layers},2,20,"  # per-layer activations the layer scan keeps
    mlp = f"{stacked}{cfg.intermediate_size}]"
    queries = f"{stacked}{cfg.num_heads},{cfg.head_dim}]"
    keys = f"{stacked}{cfg.num_kv_heads},{cfg.head_dim}]"
    assert saved["full"].count(stacked) == 1  # only the layers' inputs
    assert saved["save_projections"].count(mlp) == 2  # gate and up
    assert saved["save_projections"].count(queries) == 2  # queries and attention outputs
    assert saved["save_projections"].count(keys) == 2  # keys and values


def test_bfloat16_compute_stays_close(llama_ckpt, llama_lm):
    import jaxslm

    tokens = _random_tokens(llama_lm.vocab.size, (2, 20), seed=9)
    bf16 = jaxslm.load(llama_ckpt, compute_dtype="bfloat16").logits(tokens)
    assert bf16.dtype == np.float32
    reference = llama_lm.logits(tokens)
    assert np.abs(bf16 - reference).max() < 0.05 * np.abs(reference).max()
    assert not np.array_equal(bf16, reference)


def test_fused_kernels_give_the_xla_logits_and_gradients(llama_lm):
    """The decoder with the Pallas kernels (interpret mode on the CPU) on packed rows: the
    logits and parameter gradients of the XLA kernel."""
    import jax
    from flax import nnx

    tokens = _random_tokens(llama_lm.vocab.size, (2, 128), seed=11)
    segments = np.repeat(np.array([[1] * 50 + [2] * 60 + [0] * 18]), 2, axis=0)
    positions = np.array([list(range(50)) + list(range(60)) + list(range(18))] * 2)

    def logits_and_grads(lm):
        graphdef, params = nnx.split(lm.model)

        def loss(params):
            logits = nnx.merge(graphdef, params)(tokens, positions, segments)
            return jnp_mean_finite(logits), logits

        return jax.grad(loss, has_aux=True)(params)

    def jnp_mean_finite(logits):
        import jax.numpy as jnp

        return jnp.where(jnp.isfinite(logits), logits, 0.0).mean()

    want_grads, want = logits_and_grads(llama_lm)
    for kernel in ("pallas", "splash"):
        grads, logits = logits_and_grads(_with_config(llama_lm, attention=kernel))
        np.testing.assert_allclose(logits, want, atol=1e-5, err_msg=kernel)
        for ours, theirs in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
            np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg=kernel)
