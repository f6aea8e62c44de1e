"""The chunked output head against PyTorch: log-probabilities and the weighted NLL with its
fused gradients equal torch's log_softmax / cross-entropy and autograd on the whole logits,
for any slice length (dividing the sequence or not), with masked columns and restricted
tables; and the train step's gradients do not depend on how many slices the loss takes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxslm.models.head import chunk_length, nll_sum, target_log_probs

ROWS, LENGTH, WIDTH, COLUMNS = 3, 13, 8, 40


def problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(ROWS, LENGTH, WIDTH)).astype(np.float32)
    table = rng.normal(size=(COLUMNS, WIDTH)).astype(np.float32)
    valid = np.arange(COLUMNS) < COLUMNS - 5  # the last 5 columns are padding
    targets = rng.integers(0, COLUMNS - 5, (ROWS, LENGTH)).astype(np.int32)
    weights = (rng.random((ROWS, LENGTH)) > 0.3).astype(np.float32)
    return hidden, table, valid, targets, weights


def torch_log_softmax(hidden, table, valid):
    logits = torch.from_numpy(hidden) @ torch.from_numpy(table).T
    logits = logits.masked_fill(~torch.from_numpy(valid), float("-inf"))
    return torch.log_softmax(logits, dim=-1)


@pytest.mark.parametrize("chunk", [1, 4, 5, 13])
def test_target_log_probs_equal_torch(chunk):
    hidden, table, valid, targets, _ = problem()
    targets[0, 2] = -1  # a target outside the table
    ours = jax.jit(target_log_probs, static_argnums=4)(hidden, table, targets, valid, chunk)
    log_probs = torch_log_softmax(hidden, table, valid)
    theirs = torch.gather(log_probs, -1, torch.from_numpy(np.maximum(targets, 0)).long()[..., None])
    theirs = theirs[..., 0].numpy()
    theirs[0, 2] = -np.inf
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [2, 6, 13])
def test_nll_sum_and_its_gradients_equal_torch(chunk):
    hidden, table, valid, targets, weights = problem(seed=1)

    def loss(hidden, table, weights):
        return nll_sum(hidden, table, targets, weights, valid, chunk)

    (total, nll), pullback = jax.vjp(jax.jit(loss), hidden, table, weights)
    d_hidden, d_table, d_weights = pullback((jnp.float32(0.7), jnp.ones_like(nll)))

    hidden_t, table_t = (torch.tensor(a, requires_grad=True) for a in (hidden, table))
    weights_t = torch.tensor(weights, requires_grad=True)
    logits = (hidden_t @ table_t.T).masked_fill(~torch.from_numpy(valid), float("-inf"))
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, COLUMNS), torch.from_numpy(targets).long().reshape(-1), reduction="none"
    ).reshape(ROWS, LENGTH)
    (0.7 * (per_token * weights_t).sum()).backward()

    np.testing.assert_allclose(total, (per_token * weights_t).sum().item(), rtol=1e-5)
    np.testing.assert_allclose(nll, per_token.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_hidden, hidden_t.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(d_table, table_t.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(d_weights, weights_t.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_bfloat16_hidden_states_keep_float32_masters():
    """bf16 compute: the table's gradient comes back in its own (float32) dtype and the hidden
    states' in bf16, both near torch's float32 gradients."""
    hidden, table, valid, targets, weights = problem(seed=2)
    bf16 = jnp.asarray(hidden, jnp.bfloat16)
    d_hidden, d_table = jax.grad(
        lambda h, t: nll_sum(h, t, targets, weights, valid, 4)[0], argnums=(0, 1)
    )(bf16, table)
    assert d_hidden.dtype == jnp.bfloat16 and d_table.dtype == jnp.float32
    hidden_t = torch.tensor(np.float32(bf16), requires_grad=True)
    table_t = torch.tensor(table, requires_grad=True)
    logits = (hidden_t @ table_t.T).masked_fill(~torch.from_numpy(valid), float("-inf"))
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, COLUMNS), torch.from_numpy(targets).long().reshape(-1), reduction="none"
    )
    (per_token * torch.from_numpy(weights).reshape(-1)).sum().backward()
    np.testing.assert_allclose(np.float32(d_hidden), hidden_t.grad.numpy(), atol=0.05)
    np.testing.assert_allclose(d_table, table_t.grad.numpy(), rtol=0.02, atol=0.05)


def test_chunk_length():
    assert chunk_length(8, 2048, 128_000, 1 << 40) == 2048  # fits: one slice
    chunk = chunk_length(8, 2048, 128_000, 1 << 30)
    assert 8 * chunk * 128_000 * 4 <= 1 << 30 < 8 * (chunk * 2) * 128_000 * 4
    assert chunk_length(1, 1, 10**9, 1) == 1


def test_train_step_does_not_depend_on_the_slices(monkeypatch):
    """A logits budget that forces one position per slice gives the one-slice step's loss,
    gradient norm and updated parameters."""
    from test_train_step import build_model_parts, random_batch, run_step

    from jaxslm import backend

    parts = build_model_parts()
    batch = random_batch(rows=4, length=16, seed=5)
    whole_state, whole = run_step(parts, batch)
    monkeypatch.setattr(backend, "logits_bytes", lambda: 4)
    sliced_state, sliced = run_step(parts, batch)
    np.testing.assert_allclose(sliced["nll"], whole["nll"], rtol=1e-6)
    np.testing.assert_allclose(sliced["grad_norm"], whole["grad_norm"], rtol=1e-5)
    for got, want in zip(
        jax.tree.leaves(sliced_state["params"]), jax.tree.leaves(whole_state["params"]), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2)])
def test_sharded_sliced_step_equals_one_device(monkeypatch, mesh_shape):
    """On 8 devices (data parallel, and data x fsdp x tensor) a step whose loss takes many
    slices equals the one-device, one-slice step: each batch shard sums its own part of the
    output table's gradient, added once after the last slice."""
    from test_train_step import CFG, SCHEDULE, build_model_parts, random_batch, run_step

    from jaxslm import backend
    from jaxslm.sharding import make_mesh
    from jaxslm.training.placement import batch_sharding, state_shardings
    from jaxslm.training.step import init_state, make_train_step

    graphdef, params, optimizer = parts = build_model_parts()
    batch = random_batch(rows=8, length=16, seed=6)
    want_state, want = run_step(parts, batch)
    monkeypatch.setattr(backend, "logits_bytes", lambda: 4 * 16 * CFG.padded_vocab_size)
    mesh = make_mesh(*mesh_shape)
    shardings = state_shardings(mesh, CFG, optimizer)
    with jax.set_mesh(mesh):
        step = jax.jit(
            make_train_step(graphdef, optimizer, SCHEDULE),
            in_shardings=(shardings, batch_sharding(mesh, (8, 16))),
            out_shardings=(shardings, None),
        )
        got_state, got = step(jax.device_put(init_state(params, optimizer), shardings), batch)
    np.testing.assert_allclose(got["nll"], want["nll"], rtol=1e-5)
    np.testing.assert_allclose(got["grad_norm"], want["grad_norm"], rtol=1e-5)
    for ours, theirs in zip(
        jax.tree.leaves(got_state["params"]), jax.tree.leaves(want_state["params"]), strict=True
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
