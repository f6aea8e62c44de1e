"""The jitted train step in isolation: accumulation equals one large batch, non-finite steps
are skipped, the loss matches PyTorch's cross-entropy, and the schedule and weight decay do
what the config says."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxslm.models.decoder import Decoder
from jaxslm.models.head import nll_sum
from jaxslm.models.model_config import ModelConfig
from jaxslm.training.loss import loss_sums, mean_losses
from jaxslm.training.optimizer import learning_rate_schedule, make_optimizer
from jaxslm.training.step import batch_loss_sums, init_state, make_train_step

CFG = ModelConfig(
    family="llama",
    vocab_size=200,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    tie_word_embeddings=False,
)
SCHEDULE = learning_rate_schedule(1e-2, 1e-3, total_steps=10, warmup=2, decay="cosine")


def random_batch(rows: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """Rows of two packed documents each, some padding, all three modalities."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CFG.vocab_size, (rows, length + 1)).astype(np.int32)
    cut = length // 2
    segment_ids = np.where(np.arange(length) < cut, 1, 2).astype(np.int32)
    segment_ids = np.broadcast_to(segment_ids, (rows, length)).copy()
    segment_ids[:, -3:] = 0
    positions = np.where(np.arange(length) < cut, np.arange(length), np.arange(length) - cut)
    return {
        "tokens": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "loss_mask": (segment_ids > 0).astype(np.float32),
        "segment_ids": segment_ids,
        "positions": np.broadcast_to(positions, (rows, length)).astype(np.int32),
        "modality": rng.integers(0, 3, (rows, length)).astype(np.int8),
    }


def build_model_parts():
    """(graphdef, params, optimizer) of the test decoder."""
    graphdef, params = nnx.split(Decoder(CFG, nnx.Rngs(0)))
    optimizer = make_optimizer(SCHEDULE, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, clip_norm=1.0)
    return graphdef, nnx.to_pure_dict(params), optimizer


@pytest.fixture(scope="module")
def model_parts():
    return build_model_parts()


def run_step(model_parts, batch, micro_batches=1, params=None):
    graphdef, initial, optimizer = model_parts
    state = init_state(params if params is not None else initial, optimizer)
    step = jax.jit(make_train_step(graphdef, optimizer, SCHEDULE, micro_batches))
    return step(state, batch)


def test_four_micro_batches_equal_one_large_batch(model_parts):
    batch = random_batch(rows=8, length=16, seed=1)
    whole_state, whole = run_step(model_parts, batch)
    accumulated_state, accumulated = run_step(model_parts, batch, micro_batches=4)
    np.testing.assert_allclose(accumulated["nll"], whole["nll"], rtol=1e-6)
    assert accumulated["count"] == whole["count"]
    np.testing.assert_allclose(accumulated["grad_norm"], whole["grad_norm"], rtol=1e-5)
    jax.tree.map(
        lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7),
        accumulated_state["params"],
        whole_state["params"],
    )


def test_micro_batches_of_unequal_targets_equal_one_large_batch(model_parts):
    """The accumulated gradients are divided once by the batch's target count: a micro-batch
    of padding rows counts nothing, and one with fewer targets weighs less (a mean per
    micro-batch would differ)."""
    batch = random_batch(rows=8, length=16, seed=4)
    for key in ("segment_ids", "loss_mask"):
        batch[key][:2] = 0  # the first micro-batch is all padding
        batch[key][5, 4:] = 0  # and one row of the third has 4 targets
    whole_state, whole = run_step(model_parts, batch)
    accumulated_state, accumulated = run_step(model_parts, batch, micro_batches=4)
    assert accumulated["count"] == whole["count"] == 4 + 5 * 13
    np.testing.assert_allclose(accumulated["nll"], whole["nll"], rtol=1e-6)
    np.testing.assert_allclose(accumulated["grad_norm"], whole["grad_norm"], rtol=1e-5)
    jax.tree.map(
        lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7),
        accumulated_state["params"],
        whole_state["params"],
    )


def test_non_finite_step_is_skipped(model_parts):
    _, params, _ = model_parts
    poisoned = jax.tree.map(lambda x: x, params)
    poisoned["final_norm"]["scale"] = params["final_norm"]["scale"].at[0].set(jnp.nan)
    state, metrics = run_step(model_parts, random_batch(4, 16, seed=2), params=poisoned)
    assert int(metrics["streak"]) == 1 and int(metrics["skipped"]) == 1
    assert int(state["step"]) == 1
    jax.tree.map(np.testing.assert_array_equal, state["params"], poisoned)


def test_loss_matches_torch_cross_entropy():
    rng = np.random.default_rng(3)
    hidden = rng.normal(size=(2, 5, 4)).astype(np.float32)
    table = rng.normal(size=(11, 4)).astype(np.float32)
    targets = rng.integers(0, 11, (2, 5)).astype(np.int32)
    modality = rng.integers(0, 3, (2, 5)).astype(np.int8)
    mask = (rng.random((2, 5)) > 0.3).astype(np.float32)
    total, nll_ours = nll_sum(hidden, table, targets, mask, np.ones(11, bool), 2)
    sums = loss_sums(nll_ours, {"loss_mask": mask, "modality": modality}, total)
    logits = hidden @ table.T
    nll = (
        torch.nn.functional.cross_entropy(
            torch.tensor(logits).reshape(-1, 11),
            torch.tensor(targets).reshape(-1).long(),
            reduction="none",
        )
        .numpy()
        .reshape(2, 5)
    )
    means = mean_losses(jax.device_get(sums))
    np.testing.assert_allclose(means["loss"], (nll * mask).sum() / mask.sum(), rtol=1e-6)
    for code, name in enumerate(("text", "speech", "marker")):
        selected = mask * (modality == code)
        np.testing.assert_allclose(
            means[f"loss_{name}"], (nll * selected).sum() / selected.sum(), rtol=1e-6
        )


def test_loss_is_cross_entropy_over_the_real_vocabulary(model_parts):
    """The training NLL is PyTorch's cross-entropy over the first vocab_size columns of the
    output projection: the padded vocabulary's extra columns take no probability."""
    graphdef, params, _ = model_parts
    assert CFG.padded_vocab_size > CFG.vocab_size
    batch = random_batch(rows=2, length=16, seed=5)
    sums = batch_loss_sums(graphdef, params, batch)
    model = nnx.merge(graphdef, params)
    hidden = model.hidden_states(batch["tokens"], batch["positions"], batch["segment_ids"])
    logits = np.asarray(hidden) @ np.asarray(params["lm_head"]["kernel"])[:, : CFG.vocab_size]
    nll = torch.nn.functional.cross_entropy(
        torch.tensor(logits).reshape(-1, CFG.vocab_size),
        torch.tensor(batch["targets"]).reshape(-1).long(),
        reduction="none",
    ).numpy()
    np.testing.assert_allclose(sums["nll"], (nll * batch["loss_mask"].reshape(-1)).sum(), rtol=1e-5)


def test_schedule_warms_up_then_decays_to_the_minimum():
    peak, minimum, total, warmup = 1e-2, 1e-3, 10, 2
    assert float(SCHEDULE(0)) == 0.0
    np.testing.assert_allclose(float(SCHEDULE(1)), peak / 2)
    for step in range(warmup, total + 1):
        progress = (step - warmup) / (total - warmup)
        cosine = minimum + (peak - minimum) * 0.5 * (1 + math.cos(math.pi * progress))
        np.testing.assert_allclose(float(SCHEDULE(step)), cosine, rtol=1e-5)


def test_linear_decay_falls_from_the_peak_to_the_minimum():
    """`linear`: warmup to the peak, then a straight line to the minimum at total_steps, where
    it stays."""
    peak, minimum, total, warmup = 1e-2, 1e-3, 10, 2
    schedule = learning_rate_schedule(peak, minimum, total, warmup, "linear")
    for step in range(warmup, total + 1):
        want = peak + (minimum - peak) * (step - warmup) / (total - warmup)
        np.testing.assert_allclose(float(schedule(step)), want, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(total + 5)), minimum, rtol=1e-5)


def test_bfloat16_parameters_keep_float32_moments():
    """AdamW runs in float32 for bf16 parameters: both moments are float32, and the update is
    the float32 parameters' update rounded to bf16 (a bf16 second moment never decays)."""
    optimizer = make_optimizer(
        SCHEDULE, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1, clip_norm=1.0
    )
    wide = {"mlp": {"kernel": jnp.linspace(-1, 1, 12).reshape(3, 4)}}
    narrow = jax.tree.map(lambda x: x.astype(jnp.bfloat16), wide)
    wide = jax.tree.map(lambda x: x.astype(jnp.float32), narrow)  # the same values
    states = {"wide": optimizer.init(wide), "narrow": optimizer.init(narrow)}
    for step in range(20):
        grads = {"mlp": {"kernel": jnp.full((3, 4), 1.0 if step == 0 else 0.0)}}
        want, states["wide"] = optimizer.update(grads, states["wide"], wide)
        narrow_grads = jax.tree.map(lambda g: g.astype(jnp.bfloat16), grads)
        got, states["narrow"] = optimizer.update(narrow_grads, states["narrow"], narrow)
        assert got["mlp"]["kernel"].dtype == jnp.bfloat16
        np.testing.assert_array_equal(
            got["mlp"]["kernel"], want["mlp"]["kernel"].astype(jnp.bfloat16)
        )
    moments = [x for x in jax.tree.leaves(states["narrow"]) if x.ndim == 2]
    assert len(moments) == 2 and all(m.dtype == jnp.float32 for m in moments)


def test_weight_decay_skips_norms_and_biases():
    params = {
        "mlp": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones((3, 3))},
        "norm": {"scale": jnp.ones((2, 3))},
        "embed": {"embedding": jnp.ones((4, 3))},
    }
    optimizer = make_optimizer(
        learning_rate_schedule(0.5, 0.5, 1, 0, "constant"),
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        weight_decay=0.1,
        clip_norm=1.0,
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zeros, optimizer.init(params), params)
    np.testing.assert_allclose(updates["mlp"]["kernel"], -0.05)
    np.testing.assert_allclose(updates["embed"]["embedding"], -0.05)
    np.testing.assert_array_equal(updates["mlp"]["bias"], 0.0)
    np.testing.assert_array_equal(updates["norm"]["scale"], 0.0)
