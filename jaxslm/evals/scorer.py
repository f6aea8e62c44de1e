"""Summed log-likelihoods of token sequences: one jitted, sharded forward pass per padded shape.

Identical sequences are scored once, and sequences sharing a long prefix are scored as one
trunk with branches (`jaxslm.evals.sharing`). The resulting items are packed into rows of a
few bucketed lengths (longest first, best fit, with segment ids and restarted positions so
packed items never see each other), and rows of one length are batched so that rows x length
stays near a token budget: a whole benchmark compiles a handful of programs and computes
little padding. Scores follow slamkit: every next-token target after the first token counts,
logits are float32, and an optional modality restriction sets the other modality's logits to
-inf before the softmax; when that leaves at most half of the vocabulary, only the allowed
rows of the output projection are computed. With `SlamkitRules`, targets equal to its masked id
are not scored and the restriction is slamkit's own (`jaxslm.evals.compat`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxslm import backend
from jaxslm.errors import JaxslmError
from jaxslm.evals.compat import SlamkitRules
from jaxslm.evals.sharing import Item, plan_items
from jaxslm.models.head import OutputColumns, chunk_length, output_columns, target_log_probs
from jaxslm.sharding import (
    BATCH_AXES,
    batch_shards,
    mesh_context,
    place,
    power_of_two_at_least,
    replicate,
    round_up,
)
from jaxslm.vocab import SpeechVocab, allowed_tokens

NORMALIZATIONS = ("mean", "sum")
MIN_BUCKET = 16


def bucket_length(length: int) -> int:
    """The padded length a sequence of `length` tokens is scored at: a power of two up to 128,
    then four steps per doubling (160, 192, 224, 256, 320, ...), so that long sequences, which
    rarely share a row, carry at most 25% padding (12% on average)."""
    power = max(MIN_BUCKET, power_of_two_at_least(length))
    if power <= 128:
        return power
    return round_up(length, power // 8)


class Scorer:
    """Scores lists of token-id sequences with one model (optionally sharded over `mesh`);
    `batch_tokens` None picks `backend.scorer_batch_tokens()`; `slamkit` scores by slamkit's
    rules instead of jaxslm's."""

    def __init__(
        self,
        graphdef: nnx.GraphDef,
        params: nnx.State,
        vocab: SpeechVocab,
        padded_vocab_size: int,
        mesh: Mesh | None = None,
        batch_tokens: int | None = None,
        logits_bytes: int | None = None,
        slamkit: SlamkitRules | None = None,
    ):
        if batch_tokens is None:
            batch_tokens = backend.scorer_batch_tokens()
        if batch_tokens < MIN_BUCKET:
            raise JaxslmError(f"batch_tokens must be at least {MIN_BUCKET}, got {batch_tokens}")
        self.graphdef, self.params, self.vocab, self.mesh = graphdef, params, vocab, mesh
        self.padded_vocab_size = padded_vocab_size
        self.batch_tokens = batch_tokens
        self.slamkit = slamkit
        self.logits_bytes = backend.logits_bytes() if logits_bytes is None else logits_bytes
        self._row_multiple = 1 if mesh is None else batch_shards(mesh)
        out_shardings = None if mesh is None else NamedSharding(mesh, PartitionSpec())
        self._score = jax.jit(_score_rows, static_argnums=(0, 8), out_shardings=out_shardings)

    def summed(
        self,
        sequences: Sequence[Sequence[int]],
        modality: str | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(summed log-likelihood, number of scored targets) per sequence, float64 and int64 [N].

        `on_batch(n)` is called as each batch of n sequences completes (duplicates complete
        with their first copy).
        """
        arrays = [self._check(i, s) for i, s in enumerate(sequences)]
        allowed, masked = self.restriction(modality)
        output = output_columns(allowed)
        items, copy_of = plan_items(arrays)
        copies = np.bincount(copy_of, minlength=copy_of.max(initial=-1) + 1)
        totals = np.zeros(copies.size, np.float64)
        pending: tuple[list[list[Item]], jax.Array] | None = None
        for length, rows in self._batches(np.asarray([item.size for item in items])):
            row_items = [[items[i] for i in row] for row in rows]
            log_probs = self._run(row_items, length, output, masked)
            if pending is not None:
                self._collect(totals, copies, *pending, on_batch)
            pending = (row_items, log_probs)
        if pending is not None:
            self._collect(totals, copies, *pending, on_batch)
        counts = np.asarray([np.count_nonzero(a[1:] != masked) for a in arrays], np.int64)
        return totals[copy_of], counts

    def restriction(self, modality: str | None) -> tuple[np.ndarray, int]:
        """(boolean [padded vocab]: the ids whose logits stay under `modality`, the target id
        that is not scored or -1), by jaxslm's rules or slamkit's."""
        if self.slamkit is None:
            return allowed_tokens(self.vocab, modality, self.padded_vocab_size), -1
        allowed = self.slamkit.allowed(self.vocab, modality, self.padded_vocab_size)
        return allowed, self.slamkit.masked_target

    def log_likelihood(
        self,
        sequences: Sequence[Sequence[int]],
        normalize: str = "mean",
        modality: str | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Log-likelihood per sequence: summed, or divided by its number of targets ("mean")."""
        if normalize not in NORMALIZATIONS:
            raise JaxslmError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        totals, counts = self.summed(sequences, modality, on_batch)
        return totals / counts if normalize == "mean" else totals

    def _check(self, index: int, sequence: Sequence[int]) -> np.ndarray:
        ids = np.asarray(sequence, np.int64)
        if ids.ndim != 1 or ids.size < 2:
            raise JaxslmError(
                f"sequence {index} has {ids.size} tokens; scoring needs a flat list of at least "
                "2 ids (the first is context, the rest are scored targets)"
            )
        if ids.min() < 0 or ids.max() >= self.vocab.size:
            raise JaxslmError(
                f"sequence {index} holds ids {ids.min()}..{ids.max()}, outside the vocabulary "
                f"[0, {self.vocab.size})"
            )
        return ids.astype(np.int32)

    def _batches(self, sizes: np.ndarray) -> list[tuple[int, list[list[int]]]]:
        """Batches of rows of item indices: items of `sizes` tokens packed best-fit, longest
        first, into rows of their bucket length, so short ones fill the ends of longer rows;
        each batch holds rows of one length."""
        capacity, members, free = [], [], []  # per row; `free` sorted as (space, row)
        for index in np.argsort(-sizes, kind="stable"):
            size = int(sizes[index])
            slot = bisect.bisect_left(free, (size, -1))
            if slot < len(free):
                space, row = free.pop(slot)
            else:
                row, space = len(capacity), bucket_length(size)
                capacity.append(space)
                members.append([])
            members[row].append(int(index))
            if space - size > 1:
                bisect.insort(free, (space - size, row))
        batches = []
        for length in sorted(set(capacity)):
            rows = [members[r] for r in range(len(capacity)) if capacity[r] == length]
            per_batch = self._rows(length)
            batches += [(length, rows[i : i + per_batch]) for i in range(0, len(rows), per_batch)]
        return batches

    def _rows(self, length: int) -> int:
        return round_up(max(1, self.batch_tokens // length), self._row_multiple)

    def _padded_rows(self, rows: int, length: int) -> int:
        """The rows a batch of `rows` rows of `length` is scored as: a power of two (rounded
        up to the batch shards), at most a full batch."""
        return min(self._rows(length), round_up(power_of_two_at_least(rows), self._row_multiple))

    def _run(
        self, rows: list[list[Item]], length: int, output: OutputColumns, masked: int
    ) -> jax.Array:
        count = self._padded_rows(len(rows), length)
        tokens, segments, branches, positions = np.zeros((4, count, length), np.int32)
        for row, items in enumerate(rows):
            start = 0
            for segment, item in enumerate(items, start=1):
                pieces = [(0, item.trunk, 0)]
                pieces += [(b, t, item.trunk.size) for b, (_, t) in enumerate(item.branches, 1)]
                for branch, piece, first_position in pieces:
                    end = start + piece.size
                    tokens[row, start:end] = piece
                    segments[row, start:end] = segment
                    branches[row, start:end] = branch
                    positions[row, start:end] = np.arange(
                        first_position, first_position + piece.size
                    )
                    start = end
        chunk = chunk_length(count // self._row_multiple, length, output.width, self.logits_bytes)
        placed = [place(a, BATCH_AXES, self.mesh) for a in (tokens, segments, branches, positions)]
        output, masked = replicate((output, np.asarray(masked, np.int32)), self.mesh)
        with mesh_context(self.mesh):
            return self._score(self.graphdef, self.params, *placed, output, masked, chunk)

    @staticmethod
    def _collect(totals, copies, rows: list[list[Item]], log_probs, on_batch) -> None:
        """Add each item's target log-probabilities to its sequences' totals: the trunk's to
        every owner, each branch's to its own sequence (unscored positions hold 0)."""
        log_probs = np.asarray(log_probs, np.float64)
        done = 0
        for row, items in enumerate(rows):
            start = 0
            for item in items:
                end = start + item.trunk.size
                totals[list(item.owners)] += log_probs[row, start:end].sum()
                for owner, branch in item.branches:
                    start, end = end, end + branch.size
                    totals[owner] += log_probs[row, start:end].sum()
                start = end
                done += int(copies[list(item.owners)].sum())
        if on_batch is not None:
            on_batch(done)


def _score_rows(
    graphdef, params, tokens, segment_ids, branch_ids, positions, output, masked, chunk
):
    """Log-probability of each next token of the same segment and branch (or of a trunk's last
    token's next, the first token of branch 1) under the softmax over the `output` columns,
    per position [R, T]; 0 where unscored or where the target is `masked`."""
    model = nnx.merge(graphdef, params)
    hidden = model.hidden_states(tokens, positions, segment_ids, branch_ids)
    targets = jnp.roll(tokens, -1, axis=1)
    table, columns = output.table(model), output.column_of(targets)
    log_probs = target_log_probs(hidden, table, columns, output.valid, chunk)
    next_segment = jnp.roll(segment_ids, -1, axis=1).at[:, -1].set(0)
    next_branch = jnp.roll(branch_ids, -1, axis=1)
    same_branch = (next_branch == branch_ids) | ((branch_ids == 0) & (next_branch == 1))
    scored = (segment_ids > 0) & (next_segment == segment_ids) & same_branch & (targets != masked)
    return jnp.where(scored, log_probs, 0.0)
