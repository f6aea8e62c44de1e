"""Target log-probabilities under the output head, computed in slices of the sequence so that
the float32 logits of a whole batch never exist at once.

At the SIMS 0.5B recipe's 32 x 2048 rows the float32 logits over Qwen2.5's 152k columns
would take about 40 GB per copy; here each slice of `chunk` positions takes
rows x chunk x columns x 4 bytes, and the slices run one after another in a `lax.scan`.

- `target_log_probs`: log p(target) per position (the scorer; no gradient work).
- `nll_sum`: the summed weighted negative log-likelihood (the trainer's loss) with a fused
  gradient: each slice's softmax gradient is turned into the gradients of the hidden states
  and of the table as the slice is computed, so the backward pass neither keeps nor
  recomputes any logits.
- `output_columns`: which columns a modality restriction keeps (the scorer and generation).

The table is [columns, embed]: the whole (padded) vocabulary, or some of its rows; `valid`
[columns] marks the columns that take part (others are -inf: vocabulary padding, a banned
modality), and targets are column indices, negative for a target outside the table.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxslm.models.restricted_head import restricted_head
from jaxslm.sharding import batch_shards, constrain

PARTIAL_AXES = ("batch", "vocab", "embed")


class OutputColumns(NamedTuple):
    """The output head's columns under a restriction (a pytree that jitted functions take as
    it is): every row of the padded vocabulary in order (`ids` and `index` None), or the rows
    `ids` [K] only, `index` [padded vocab] giving each id's column (-1: none). `valid` [K]
    marks the columns that take part."""

    ids: Any
    valid: Any
    index: Any

    @property
    def width(self) -> int:
        """K, the number of columns (padding ones included)."""
        return self.valid.shape[0]

    def table(self, model) -> jax.Array:
        """The decoder's output table [K, embed] at these columns."""
        return model.output_table(self.ids)

    def logits(self, model, hidden) -> jax.Array:
        """The decoder's float32 logits [..., K] at these columns."""
        return model.project(hidden) if self.ids is None else model.project_rows(hidden, self.ids)

    def column_of(self, tokens):
        """The column of each token id; -1 for an id outside the columns."""
        return tokens if self.index is None else self.index[tokens]

    def token_of(self, columns):
        """The token id of each column."""
        return columns if self.ids is None else self.ids[columns]

    def at_columns(self, per_id):
        """A per-id array [padded vocab, ...] read at these columns: [K, ...]."""
        return per_id if self.ids is None else per_id[self.ids]


def output_columns(allowed: np.ndarray) -> OutputColumns:
    """The columns to compute for the boolean mask `allowed` [padded vocab]: the allowed rows
    only when that pays (`jaxslm.models.restricted_head`), else every row, `allowed` marking
    the valid ones."""
    head = restricted_head(allowed)
    if head is None:
        return OutputColumns(None, allowed, None)
    return OutputColumns(head.ids, head.valid, head.index)


def chunk_length(rows: int, length: int, columns: int, budget_bytes: int) -> int:
    """Positions per slice so that rows x chunk x columns float32 logits fit `budget_bytes`
    (the whole length when they fit; always at least 1)."""
    slices = max(1, math.ceil(rows * length * columns * 4 / budget_bytes))
    return math.ceil(length / slices)


def target_log_probs(hidden, table, targets, valid, chunk: int) -> jax.Array:
    """Float32 log-probability [B, T] of each target column under the softmax over the valid
    columns of hidden [B, T, E] . table [C, E]^T; -inf for a negative target."""
    log_probs, _ = _scan_slices(hidden, table, targets, None, valid, chunk, gradients=False)
    return log_probs


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def differentiable_log_probs(hidden, table, targets, valid, chunk: int) -> jax.Array:
    """`target_log_probs`, differentiable in `hidden` and `table` for any weighting of the
    positions (a DPO loss weighs each sequence's sum by its own factor): the backward pass
    runs the slices again with the incoming cotangents as weights, so no logits are kept."""
    return target_log_probs(hidden, table, targets, valid, chunk)


def _log_probs_forward(hidden, table, targets, valid, chunk):
    return target_log_probs(hidden, table, targets, valid, chunk), (hidden, table, targets, valid)


def _log_probs_backward(chunk, residuals, cotangent):
    hidden, table, targets, valid = residuals
    # The slices give the gradient of sum(weights x NLL) = sum(cotangent x log p).
    _, (d_hidden, d_table) = _scan_slices(
        hidden, table, targets, -cotangent, valid, chunk, gradients=True
    )
    return d_hidden.astype(hidden.dtype), d_table, None, None


differentiable_log_probs.defvjp(_log_probs_forward, _log_probs_backward)


def nll_sum(hidden, table, targets, weights, valid, chunk: int) -> tuple[jax.Array, jax.Array]:
    """(sum of weights x NLL, the NLL [B, T] per position) under the output head.

    Differentiable in `hidden` and `table` through the sum; the per-position NLL is for
    metrics and carries no gradient.
    """
    total, nll = _fused_nll_sum(hidden, table, targets, weights, valid, chunk)
    return total, jax.lax.stop_gradient(nll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _fused_nll_sum(hidden, table, targets, weights, valid, chunk):
    log_probs, _ = _scan_slices(hidden, table, targets, weights, valid, chunk, gradients=False)
    nll = -log_probs
    return jnp.sum(jnp.where(weights != 0, nll, 0.0) * weights), nll


def _fused_forward(hidden, table, targets, weights, valid, chunk):
    log_probs, (d_hidden, d_table) = _scan_slices(
        hidden, table, targets, weights, valid, chunk, gradients=True
    )
    nll = -log_probs
    total = jnp.sum(jnp.where(weights != 0, nll, 0.0) * weights)
    return (total, nll), (d_hidden, d_table, nll)


def _fused_backward(chunk, residuals, cotangents):
    d_hidden, d_table, nll = residuals
    scale = cotangents[0]  # the NLL output's cotangent is dropped (stop_gradient in nll_sum)
    return (
        (d_hidden * scale).astype(d_hidden.dtype),
        (d_table * scale).astype(d_table.dtype),
        None,
        nll * scale,
        None,
    )


_fused_nll_sum.defvjp(_fused_forward, _fused_backward)


def _scan_slices(hidden, table, targets, weights, valid, chunk: int, gradients: bool):
    """Log-probabilities [B, T] of the targets, slice by slice; with `gradients`, also the
    gradients of sum(weights x NLL) with respect to hidden and table."""
    rows, length, width = hidden.shape
    slices = -(-length // chunk)
    padding = slices * chunk - length
    if weights is None:
        weights = jnp.zeros(targets.shape, jnp.float32)
    pad = ((0, 0), (0, padding))
    hidden = jnp.pad(hidden, (*pad, (0, 0)))
    targets, weights = jnp.pad(targets, pad, constant_values=-1), jnp.pad(weights, pad)

    def split(array):
        return array.reshape(rows, slices, chunk, *array.shape[2:]).swapaxes(0, 1)

    compute = hidden.dtype
    table_in = table.astype(compute)

    def one_slice(d_table, piece):
        hidden_slice, target_slice, weight_slice = piece
        logits = jnp.einsum(
            "bce,ve->bcv", hidden_slice, table_in, preferred_element_type=jnp.float32
        )
        logits = jnp.where(valid, logits, -jnp.inf)
        log_norm = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
        column = jnp.maximum(target_slice, 0)[..., None]
        picked = jnp.take_along_axis(logits, column, axis=-1)
        log_prob = jnp.where(target_slice >= 0, (picked - log_norm)[..., 0], -jnp.inf)
        if not gradients:
            return d_table, (log_prob, None)
        one_hot = jnp.arange(logits.shape[-1]) == target_slice[..., None]
        d_logits = (jnp.exp(logits - log_norm) - one_hot) * weight_slice[..., None]
        d_logits = d_logits.astype(compute)
        d_hidden = jnp.einsum("bcv,ve->bce", d_logits, table_in, preferred_element_type=jnp.float32)
        d_table = d_table + constrain(
            jnp.einsum(
                "sbcv,sbce->sve",
                d_logits.reshape(shards, rows // shards, *d_logits.shape[1:]),
                hidden_slice.reshape(shards, rows // shards, *hidden_slice.shape[1:]),
                preferred_element_type=jnp.float32,
            ),
            PARTIAL_AXES,
        )
        return d_table, (log_prob, d_hidden.astype(compute))

    # Each group of rows that one batch shard holds sums its own part of the table's gradient;
    # the parts are added once after the last slice (one all-reduce per step, not per slice).
    shards = batch_shards() if rows % batch_shards() == 0 else 1
    partial = jnp.zeros((shards, *table.shape), jnp.float32)
    start = constrain(partial, PARTIAL_AXES) if gradients else None
    d_table, (log_probs, d_hidden) = jax.lax.scan(
        one_slice, start, (split(hidden), split(targets), split(weights))
    )

    def merge(array):
        return array.swapaxes(0, 1).reshape(rows, slices * chunk, *array.shape[3:])[:, :length]

    log_probs = merge(log_probs)
    if not gradients:
        return log_probs, None
    return log_probs, (merge(d_hidden), d_table.sum(axis=0).astype(table.dtype))
