"""Speech units of benchmark audio: each file as tokenized alone (jaxslm), or as slamkit's
evaluation tokenizes pairs, in zero-padded batches without an attention mask.

slamkit (slamkit/metric/modelling_metric.py) loads `batch_size` pairs at a time (8, its
config/eval.yaml), pads the positives of those pairs together and the negatives together, and
tokenizes each padded batch at once. Without a mask, HuBERT's GroupNorm, positional
convolution and attention see the zero padding, so a file's units depend on the longest file
of its batch. Cross-modal StoryCloze (slamkit/metric/cross_modal_metric.py) tokenizes each
speech segment alone, and for S->S the prompt's and the ending's audio joined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.evals.items import Item
from jaxslm.speech.audio import load_audio
from jaxslm.speech.tokenizer import SpeechTokenizer

Pair = tuple[Item, Item]


class AudioUnits:
    """Units for items that hold audio but no units yet (`Item.audio`) through `tokenizer`:
    each file alone, or, with `batch_pairs`, in slamkit's padded batches of that many pairs."""

    def __init__(self, tokenizer: SpeechTokenizer, batch_pairs: int | None = None):
        if batch_pairs is not None and batch_pairs < 1:
            raise JaxslmError(f"batch_pairs must be at least 1, got {batch_pairs}")
        self.tokenizer, self.batch_pairs = tokenizer, batch_pairs

    @property
    def slamkit(self) -> bool:
        """Whether audio is tokenized slamkit's way."""
        return self.batch_pairs is not None

    def items(self, items: Sequence[Item]) -> list[Item]:
        """`items` with the units of their audio, each file tokenized alone."""
        pending = [i for i, item in enumerate(items) if _needs_units(item)]
        waves = [load_audio(items[i].audio) for i in pending]
        units = self._units([items[i] for i in pending], waves)
        result = list(items)
        for i, ids in zip(pending, units, strict=True):
            result[i] = replace(items[i], units=ids)
        return result

    def pairs(self, pairs: Sequence[Pair]) -> list[Pair]:
        """`pairs` with the units of their audio: each file alone, or, slamkit's way, every run
        of `batch_pairs` pairs as two padded batches, its positives and its negatives."""
        if not self.slamkit:
            flat = self.items([item for pair in pairs for item in pair])
            return list(zip(flat[0::2], flat[1::2], strict=True))
        members, waves, widths = [], [], []
        for start in range(0, len(pairs), self.batch_pairs):
            for side in (0, 1):
                batch = [pair[side] for pair in pairs[start : start + self.batch_pairs]]
                batch = [item for item in batch if _needs_units(item)]
                batch_waves = [load_audio(item.audio) for item in batch]
                width = max((len(w) for w in batch_waves), default=0)
                members += batch
                waves += batch_waves
                widths += [width] * len(batch)
        names = [item.name for item in members]
        units = dict(zip(names, self._units(members, waves, widths), strict=True))

        def filled(item: Item) -> Item:
            if item.name not in units:
                return item
            return replace(item, units=units[item.name])

        return [(filled(positive), filled(negative)) for positive, negative in pairs]

    def joined(self, firsts: Sequence[Item], seconds: Sequence[Item]) -> list[np.ndarray]:
        """Units of each first item's audio followed by its second's, as one file."""
        for item in (*firsts, *seconds):
            if item.audio is None:
                raise JaxslmError(f"{item.origin}: {item.name} has no audio to join")
        waves = [
            np.concatenate([load_audio(a.audio), load_audio(b.audio)])
            for a, b in zip(firsts, seconds, strict=True)
        ]
        return self._units(seconds, waves)

    def _units(
        self, items: Sequence[Item], waves: list[np.ndarray], widths: list[int] | None = None
    ) -> list[np.ndarray]:
        units = [ids for ids, _ in self.tokenizer.units(waves, widths)] if waves else []
        for item, ids in zip(items, units, strict=True):
            if ids.size == 0:
                raise JaxslmError(f"{item.origin}: too short for one HuBERT frame")
        return units


def _needs_units(item: Item) -> bool:
    return item.audio is not None and item.units is None
