"""The DPO objective (Rafailov et al., 2023) as slamkit trains it through TRL's DPOTrainer: the
summed log-probabilities of each continuation's tokens under the policy and the reference,
the sigmoid loss -log sigmoid(beta x margin) with margin = (chosen - reference chosen) -
(rejected - reference rejected), and label smoothing as conservative DPO: (1 - eps) x that
loss + eps x the loss of the flipped label (TRL's sigmoid loss with label_smoothing in the
older TRL releases; TRL 1.16's `sigmoid` has no smoothing).

One packed forward pass scores both continuations of every pair of a batch (rows from
jaxslm.data.preference_batches). Sums over pairs (`dpo_sums`) add up across micro-batches and
devices; the step divides by the number of pairs, as TRL's mean over a batch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxslm import backend
from jaxslm.config.dpo_section import DpoSection
from jaxslm.models.head import chunk_length, differentiable_log_probs, target_log_probs
from jaxslm.sharding import batch_shards
from jaxslm.training.step import Batch, TrainState, accumulated_gradients, optimizer_step

# Per-pair quantities whose means a step reports (TRL's rewards/*, logps/* metrics).
PAIR_MEANS = (
    "loss",
    "rewards_chosen",
    "rewards_rejected",
    "reward_margin",
    "reward_accuracy",
    "logps_chosen",
    "logps_rejected",
    "likelihood_accuracy",
)


def continuation_log_probs(
    graphdef: nnx.GraphDef, params: dict, batch: Batch, share_prompt: bool, differentiable: bool
) -> tuple[jax.Array, jax.Array]:
    """Summed float32 log-probabilities of the chosen and of the rejected continuation of each
    pair slot, [rows, slots] each (0 for empty slots). `differentiable`: gradients flow to
    `params` through every scored position."""
    model = nnx.merge(graphdef, params)
    branches = batch["branch_ids"] if share_prompt else None
    hidden = model.hidden_states(
        batch["tokens"], batch["positions"], batch["segment_ids"], branches
    )
    rows, length = batch["tokens"].shape
    columns = model.config.padded_vocab_size
    chunk = chunk_length(rows // batch_shards(), length, columns, backend.logits_bytes())
    log_probs_of = differentiable_log_probs if differentiable else target_log_probs
    log_probs = log_probs_of(
        hidden, model.output_table(), batch["targets"], model.real_columns(), chunk
    )
    slots = batch["pair_valid"].shape[1]
    slot = batch["slot"]
    scored = jnp.where(slot >= 0, log_probs, 0.0)
    bucket = jnp.where(slot >= 0, slot, 2 * slots)  # unscored positions: a spare bucket
    sums = jax.vmap(
        lambda values, ids: jax.ops.segment_sum(values, ids, num_segments=2 * slots + 1)
    )(scored, bucket)
    return sums[:, 0 : 2 * slots : 2], sums[:, 1 : 2 * slots : 2]


def pair_terms(
    policy: tuple[jax.Array, jax.Array],
    reference: tuple[jax.Array, jax.Array],
    beta: float,
    label_smoothing: float,
) -> dict[str, jax.Array]:
    """Per pair: the DPO loss, the implicit rewards beta x (policy - reference) of both
    continuations, their margin and whether it is positive, the policy's summed
    log-probabilities and whether the chosen one is the more likely."""
    chosen_ratio = policy[0] - reference[0]
    rejected_ratio = policy[1] - reference[1]
    logits = beta * (chosen_ratio - rejected_ratio)
    loss = -(1 - label_smoothing) * jax.nn.log_sigmoid(logits)
    loss -= label_smoothing * jax.nn.log_sigmoid(-logits)
    chosen_reward, rejected_reward = beta * chosen_ratio, beta * rejected_ratio
    return {
        "loss": loss,
        "rewards_chosen": chosen_reward,
        "rewards_rejected": rejected_reward,
        "reward_margin": chosen_reward - rejected_reward,
        "reward_accuracy": (chosen_reward > rejected_reward).astype(jnp.float32),
        "logps_chosen": policy[0],
        "logps_rejected": policy[1],
        "likelihood_accuracy": (policy[0] > policy[1]).astype(jnp.float32),
    }


def dpo_sums(
    graphdef: nnx.GraphDef,
    params: dict,
    batch: Batch,
    reference_params: dict | None,
    settings: DpoSection,
    differentiable: bool = True,
) -> dict[str, jax.Array]:
    """Sums over the batch's pairs of each of `PAIR_MEANS`, with `pairs` (their number) and
    `loss_tokens` (scored continuation targets). `settings` is the config's `dpo` section; the
    reference's log-probabilities come from `reference_params` (frozen), the batch
    (precomputed) or are zero (none)."""
    share = settings.share_prompt
    policy = continuation_log_probs(graphdef, params, batch, share, differentiable)
    if settings.reference == "frozen":
        reference = jax.lax.stop_gradient(
            continuation_log_probs(graphdef, reference_params, batch, share, False)
        )
    elif settings.reference == "precomputed":
        reference = (batch["ref_chosen"], batch["ref_rejected"])
    else:
        reference = (jnp.zeros_like(policy[0]), jnp.zeros_like(policy[1]))
    terms = pair_terms(policy, reference, settings.beta, settings.label_smoothing)
    valid = batch["pair_valid"]
    sums = {name: jnp.sum(jnp.where(valid > 0, value, 0.0)) for name, value in terms.items()}
    sums["pairs"] = valid.sum()
    sums["loss_tokens"] = (batch["slot"] >= 0).sum().astype(jnp.float32)
    return sums


def make_dpo_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    settings: DpoSection,
    micro_batches: int = 1,
) -> Callable[[TrainState, Batch, dict | None], tuple[TrainState, dict[str, jax.Array]]]:
    """`step(state, batch, reference_params) -> (state, metrics)`: the mean DPO loss over the
    batch's pairs, its gradients summed over `micro_batches` row sets before one division by
    the number of pairs, then the trainer's clipping, AdamW and non-finite guard."""

    def step(state: TrainState, batch: Batch, reference_params: dict | None = None):
        def summed_loss(params: dict, rows: Batch) -> tuple[jax.Array, dict]:
            sums = dpo_sums(graphdef, params, rows, reference_params, settings)
            return sums["loss"], sums

        grad_fn = jax.grad(summed_loss, has_aux=True)
        grads, sums = accumulated_gradients(grad_fn, state["params"], batch, micro_batches)
        return optimizer_step(state, grads, sums, sums["loss"], sums["pairs"], optimizer, schedule)

    return step


def dpo_means(sums: dict) -> dict[str, float]:
    """Each of `PAIR_MEANS` averaged over the pairs of `dpo_sums` output (NaN without pairs)."""
    pairs = float(sums["pairs"])
    return {name: float(sums[name]) / pairs if pairs else float("nan") for name in PAIR_MEANS}
