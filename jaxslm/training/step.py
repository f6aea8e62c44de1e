"""The train state and the jitted step: micro-batched gradients, clipping, AdamW, skipping of
non-finite updates, and the metrics of one step.

The state is a plain dict pytree (what Orbax saves):
  params     the decoder's parameters (float32 masters by default)
  opt_state  optax state
  step       optimizer steps taken, skipped ones included
  skipped    steps whose gradients were not finite (no update applied)
  streak     consecutive non-finite steps up to now
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxslm import backend
from jaxslm.models.decoder import Decoder
from jaxslm.models.head import chunk_length, nll_sum
from jaxslm.models.model_config import ModelConfig
from jaxslm.sharding import batch_shards
from jaxslm.training.loss import loss_sums

Batch = dict[str, jax.Array]
TrainState = dict


def init_state(params: dict, optimizer: optax.GradientTransformation) -> TrainState:
    """A fresh train state around `params`."""
    zero = jnp.zeros((), jnp.int32)
    return {
        "params": params,
        "opt_state": optimizer.init(params),
        "step": zero,
        "skipped": zero,
        "streak": zero,
    }


def scratch_state(
    cfg: ModelConfig, seed: int, optimizer: optax.GradientTransformation
) -> TrainState:
    """A train state around freshly initialised decoder parameters (jit or eval_shape it)."""
    model = Decoder(cfg, nnx.Rngs(seed))
    return init_state(nnx.to_pure_dict(nnx.state(model, nnx.Param)), optimizer)


def batch_loss_sums(graphdef: nnx.GraphDef, params: dict, batch: Batch) -> dict[str, jax.Array]:
    """Per-modality NLL sums and counts of one batch (see jaxslm.training.loss). The output
    head runs in slices of the sequence whose float32 logits stay under
    `backend.logits_bytes()` per device (jaxslm.models.head)."""
    model = nnx.merge(graphdef, params)
    hidden = model.hidden_states(batch["tokens"], batch["positions"], batch["segment_ids"])
    rows, length = batch["tokens"].shape
    columns = model.config.padded_vocab_size
    chunk = chunk_length(rows // batch_shards(), length, columns, backend.logits_bytes())
    weights = batch["loss_mask"].astype(jnp.float32)
    total, nll = nll_sum(
        hidden, model.output_table(), batch["targets"], weights, model.real_columns(), chunk
    )
    return loss_sums(nll, batch, total)


def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    micro_batches: int = 1,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """`step(state, batch) -> (state, metrics)` for batches of [batch, length] arrays.

    The loss is the mean NLL over every `loss_mask` target of the whole batch; with
    `micro_batches` > 1 the batch is cut into that many row sets whose gradients of the
    summed NLL add up before one division, so accumulation equals one large batch.
    """

    def summed_nll(p: dict, rows: Batch) -> tuple[jax.Array, dict]:
        sums = batch_loss_sums(graphdef, p, rows)
        return sums["nll"], sums

    grad_fn = jax.grad(summed_nll, has_aux=True)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        grads, sums = accumulated_gradients(grad_fn, state["params"], batch, micro_batches)
        return optimizer_step(state, grads, sums, sums["nll"], sums["count"], optimizer, schedule)

    return step


def accumulated_gradients(
    grad_fn: Callable[[dict, Batch], tuple[dict, dict]],
    params: dict,
    batch: Batch,
    micro_batches: int,
) -> tuple[dict, dict]:
    """`grad_fn(params, rows) -> (gradients, sums)` over the whole batch, summed over
    `micro_batches` row sets: micro-batch j takes rows j, j + m, j + 2m, ..., so every device
    keeps its own rows."""
    if micro_batches == 1:
        return grad_fn(params, batch)
    blocks = jax.tree.map(
        lambda x: x.reshape(x.shape[0] // micro_batches, micro_batches, *x.shape[1:]).swapaxes(
            0, 1
        ),
        batch,
    )

    def accumulate(carry, rows):
        grads, sums = grad_fn(params, rows)
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

    first = jax.tree.map(lambda x: x[0], blocks)
    zero = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, first))
    (grads, sums), _ = jax.lax.scan(accumulate, zero, blocks)
    return grads, sums


def optimizer_step(
    state: TrainState,
    grads: dict,
    sums: dict,
    total: jax.Array,
    count: jax.Array,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Apply the summed `grads` of a loss summed to `total` over `count` items (targets,
    pairs): divided by `count`, clipped and applied by `optimizer`, unless the gradient norm or
    `total` is not finite (then the step is counted as skipped). Metrics: `sums`, `grad_norm`,
    `lr`, `skipped`, `streak`."""
    params = state["params"]
    grads = jax.tree.map(lambda g: g / jnp.maximum(count, 1.0), grads)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(grad_norm) & jnp.isfinite(total)
    keep = lambda new, old: jax.tree.map(  # noqa: E731
        lambda n, o: jnp.where(finite, n, o), new, old
    )
    applied = state["step"] - state["skipped"]
    skipped = jnp.where(finite, 0, 1).astype(jnp.int32)
    new_state = {
        "params": keep(new_params, params),
        "opt_state": keep(opt_state, state["opt_state"]),
        "step": state["step"] + 1,
        "skipped": state["skipped"] + skipped,
        "streak": jnp.where(finite, 0, state["streak"] + 1).astype(jnp.int32),
    }
    metrics = dict(
        sums,
        grad_norm=grad_norm,
        lr=schedule(applied),
        skipped=new_state["skipped"],
        streak=new_state["streak"],
    )
    return new_state, metrics


def make_eval_step(graphdef: nnx.GraphDef) -> Callable[[dict, Batch], dict[str, jax.Array]]:
    """`eval_step(params, batch) -> loss sums` for held-out batches."""
    return lambda params, batch: batch_loss_sums(graphdef, params, batch)
