"""Preference pairs -> packed rows for the DPO step.

Sequences are built as slamkit's DPO trainer builds them (`tokenize_row`,
slamkit/trainer/slam_dpo_trainer.py): the prompt is BOS + its tokens, cut to its last
`max_prompt` tokens; each continuation is its tokens + EOS, cut to its first `max_completion`.
A speech side is its units, a text side the tokenizer's ids without special tokens.

Packing: each pair is one segment of a row. With `share_prompt`, the prompt but its last token
is a trunk and each continuation a branch that starts again from the prompt's last token
(the scorer's layout, jaxslm.evals.sharing: a branch sees the trunk and itself only, and its
positions continue the trunk's), so the prompt is computed once for both continuations.
Without it, prompt + chosen and prompt + rejected are two segments.

Row fields [rows, length]: `tokens`, `targets`, `positions`, `segment_ids`, `branch_ids`, and
`slot`: 2k for the targets of the chosen continuation of the row's k-th pair, 2k + 1 for the
rejected one's, -1 elsewhere (prompts and padding are never scored). Pair fields
[rows, slots]: `pair_valid` (1.0 where slot k holds a pair), `pair_index` (its index among the
encoded pairs, -1: none), and `ref_chosen`, `ref_rejected` when reference log-probabilities
are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxslm.data.encode import batch_encoder
from jaxslm.data.preference import SIDES
from jaxslm.data.preference_store import PreferenceSet
from jaxslm.errors import JaxslmError
from jaxslm.text_tokenizer import TextTokenizer
from jaxslm.vocab import SpeechVocab

Sequences = tuple[np.ndarray, np.ndarray, np.ndarray]  # prompt, chosen, rejected token ids
ROW_FIELDS = ("tokens", "targets", "positions", "segment_ids", "branch_ids", "slot")


@dataclass(frozen=True)
class SequenceRules:
    """slamkit's DPO `tokenize_row`: BOS (none when the family has none) + prompt, the last
    `max_prompt` tokens kept; completion + EOS, the first `max_completion` tokens kept."""

    bos: tuple[int, ...]
    eos: int
    max_prompt: int
    max_completion: int

    def prompt(self, ids: np.ndarray) -> np.ndarray:
        return np.concatenate([self.bos, ids]).astype(np.int32)[-self.max_prompt :]

    def completion(self, ids: np.ndarray) -> np.ndarray:
        return np.concatenate([ids, [self.eos]]).astype(np.int32)[: self.max_completion]


def pair_positions(prompt: int, chosen: int, rejected: int, share_prompt: bool) -> int:
    """Row positions a pair of these token counts takes (a sequence of n tokens takes n - 1)."""
    if share_prompt:
        return prompt - 1 + chosen + rejected
    return 2 * prompt - 2 + chosen + rejected


class EncodedPairs:
    """The pairs of one split whose three sides all have `modality` (speech: units; text:
    text), as token sequences; pair i here is `indices[i]` of the split."""

    def __init__(
        self,
        pairs: PreferenceSet,
        modality: str,
        vocab: SpeechVocab,
        tokenizer: TextTokenizer | None,
        rules: SequenceRules,
    ):
        self.indices = np.flatnonzero(pairs.complete(modality))
        self.left_out = len(pairs) - len(self.indices)
        sides = {}
        for side in SIDES:
            if modality == "speech":
                ids = [vocab.units_to_ids(pairs.units(side, i)) for i in self.indices]
            else:
                encode = batch_encoder(tokenizer, threads=2)
                ids = encode([pairs.text(side, i) for i in self.indices])
            build = rules.prompt if side == "prompt" else rules.completion
            sides[side] = [build(np.asarray(s, np.int32)) for s in ids]
        self.sequences: list[Sequences] = list(zip(*(sides[s] for s in SIDES), strict=True))

    def __len__(self) -> int:
        return len(self.sequences)

    def positions(self, share_prompt: bool) -> np.ndarray:
        """Row positions each pair takes [pairs]."""
        sizes = [[len(s) for s in sequences] for sequences in self.sequences]
        return np.asarray([pair_positions(*s, share_prompt) for s in sizes], np.int64)


@dataclass(frozen=True)
class RowLayout:
    """Rows of a batch: `rows` x `length` positions holding at most `slots` pairs each."""

    rows: int
    length: int
    slots: int
    share_prompt: bool


def first_fit(fill: list[int], count: list[int], size: int, layout: RowLayout) -> int | None:
    """The first row with room for a pair of `size` positions (rows holding `fill` positions
    and `count` pairs), or None."""
    return next(
        (
            r
            for r in range(layout.rows)
            if fill[r] + size <= layout.length and count[r] < layout.slots
        ),
        None,
    )


def pack_pairs(
    pairs: list[tuple[int, Sequences]], layout: RowLayout, reference: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Rows holding `pairs` ((index among the encoded pairs, sequences) each), placed
    first-fit; `reference` [encoded pairs, 2] adds `ref_chosen` and `ref_rejected`."""
    shape, pair_shape = (layout.rows, layout.length), (layout.rows, layout.slots)
    batch = {name: np.zeros(shape, np.int32) for name in ROW_FIELDS}
    batch["slot"][:] = -1
    batch["pair_valid"] = np.zeros(pair_shape, np.float32)
    batch["pair_index"] = np.full(pair_shape, -1, np.int32)
    fill, count = [0] * layout.rows, [0] * layout.rows
    for index, sequences in pairs:
        size = pair_positions(*(len(s) for s in sequences), layout.share_prompt)
        row = first_fit(fill, count, size, layout)
        if row is None:
            raise JaxslmError(
                f"{len(pairs)} pairs do not fit data.batch_size={layout.rows} rows of "
                f"data.seq_len={layout.length} positions: lower dpo.pairs_per_step or raise "
                "data.batch_size or data.seq_len"
            )
        _place(batch, row, fill[row], count[row], sequences, layout.share_prompt)
        batch["pair_valid"][row, count[row]] = 1.0
        batch["pair_index"][row, count[row]] = index
        fill[row] += size
        count[row] += 1
    if reference is not None:
        picked = reference[np.maximum(batch["pair_index"], 0)]
        valid = batch["pair_valid"] > 0
        batch["ref_chosen"] = np.where(valid, picked[..., 0], 0.0).astype(np.float32)
        batch["ref_rejected"] = np.where(valid, picked[..., 1], 0.0).astype(np.float32)
    return batch


def _place(batch: dict, row: int, start: int, k: int, sequences: Sequences, share: bool) -> None:
    """Write pair `k` of `row` from position `start`: segment 2k + 1 (a trunk and two
    branches), or segments 2k + 1 and 2k + 2 (prompt + chosen, prompt + rejected)."""
    prompt, chosen, rejected = sequences
    # (tokens, segment, branch, first position, slot, scored targets) of each piece
    if share:
        pieces = [(prompt, 2 * k + 1, 0, 0, -1, 0)]  # the trunk: prompt[:-1] -> prompt[1:]
        pieces += [
            (
                np.concatenate([prompt[-1:], c]),
                2 * k + 1,
                1 + side,
                prompt.size - 1,
                2 * k + side,
                c.size,
            )
            for side, c in enumerate((chosen, rejected))
        ]
    else:
        pieces = [
            (np.concatenate([prompt, c]), 2 * k + 1 + side, 0, 0, 2 * k + side, c.size)
            for side, c in enumerate((chosen, rejected))
        ]
    for sequence, segment, branch, first_position, slot, scored in pieces:
        end = start + sequence.size - 1
        batch["tokens"][row, start:end] = sequence[:-1]
        batch["targets"][row, start:end] = sequence[1:]
        batch["segment_ids"][row, start:end] = segment
        batch["branch_ids"][row, start:end] = branch
        batch["positions"][row, start:end] = np.arange(first_position, first_position + end - start)
        batch["slot"][row, end - scored : end] = slot if scored else -1
        start = end


class PreferenceBatches:
    """Batches of `pairs_per_batch` pairs of `encoded` packed into `layout.rows` rows, in an
    order drawn per epoch from (seed, epoch) (`shuffle`; else in order), endless or for
    `num_epochs` (the last batch then holds the rest). A pair that no row has room for left
    starts the next batch instead, so a batch of long pairs holds fewer and packing never
    fails mid-run. `get_state` / `set_state` save and restore the position."""

    def __init__(
        self,
        encoded: EncodedPairs,
        layout: RowLayout,
        pairs_per_batch: int,
        seed: int,
        shuffle: bool = True,
        num_epochs: int | None = None,
        reference: np.ndarray | None = None,
    ):
        self.encoded, self.layout, self.pairs_per_batch = encoded, layout, pairs_per_batch
        self.seed, self.shuffle, self.num_epochs = seed, shuffle, num_epochs
        self.reference = reference
        self.epoch, self.offset = 0, 0
        self._orders: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))

    def __iter__(self) -> PreferenceBatches:
        return self

    def _ended(self) -> bool:
        return not len(self.encoded) or (
            self.num_epochs is not None and self.epoch >= self.num_epochs
        )

    def _order(self) -> np.ndarray:
        """This epoch's order of the pairs (drawn once per epoch)."""
        if self._orders[0] != self.epoch:
            size = len(self.encoded)
            order = (
                np.random.default_rng([self.seed, self.epoch]).permutation(size)
                if self.shuffle
                else np.arange(size)
            )
            self._orders = (self.epoch, order)
        return self._orders[1]

    def __next__(self) -> dict[str, np.ndarray]:
        if self._ended():
            raise StopIteration
        taken: list[int] = []
        layout = self.layout
        fill, count = [0] * layout.rows, [0] * layout.rows
        while len(taken) < self.pairs_per_batch and not self._ended():
            index = int(self._order()[self.offset])
            sequences = self.encoded.sequences[index]
            size = pair_positions(*(len(s) for s in sequences), layout.share_prompt)
            row = first_fit(fill, count, size, layout)
            if row is None:
                break  # it starts the next batch
            fill[row], count[row] = fill[row] + size, count[row] + 1
            taken.append(index)
            self.offset += 1
            if self.offset == len(self._order()):
                self.epoch, self.offset = self.epoch + 1, 0
        pairs = [(i, self.encoded.sequences[i]) for i in taken]
        return pack_pairs(pairs, self.layout, self.reference)

    def get_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset}

    def set_state(self, state: dict[str, Any]) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
