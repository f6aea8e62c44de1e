"""Prompts as token ids, laid out as slamkit builds them, and generated ids back to units/text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.text_tokenizer import TextTokenizer
from jaxslm.vocab import MODALITIES, SpeechVocab


@dataclass(frozen=True)
class Piece:
    """One run of a prompt: speech units or text."""

    modality: str
    units: tuple[int, ...] = ()
    text: str = ""


class PromptBuilder:
    """Token ids of prompts and readable outputs for one model's vocabulary.

    Speech-only models: `<S>` + units. Interleaved models (slamkit's `build_prompt`): BOS, a
    marker at the start and at every switch of modality, then the output modality's marker;
    except that a lone speech piece continued in speech is plain units, as slamkit's speech
    continuation metrics prompt (slamkit/metric/generative_metric.py), while its cross-modal
    generation prompts `<speech>` units `<text>` (slamkit/metric/cross_modal_generation.py).
    """

    def __init__(self, vocab: SpeechVocab, tokenizer: TextTokenizer | None):
        self.vocab, self.tokenizer = vocab, tokenizer
        bos = vocab.bos_id if tokenizer is None else tokenizer.bos_id
        self.bos = [] if bos is None else [bos]

    def ids(self, pieces: list[Piece], output: str) -> list[int]:
        """The prompt for continuing `pieces` in modality `output`."""
        if output not in MODALITIES:
            raise JaxslmError(f"output modality {output!r} is not one of {MODALITIES}")
        if not pieces:
            raise JaxslmError("the prompt has no pieces")
        if self.vocab.mode == "speech-only":
            if output != "speech" or any(p.modality != "speech" for p in pieces):
                raise JaxslmError("a speech-only model reads and writes speech units only")
            return [*self.bos, *(i for p in pieces for i in self._units(p))]
        if self.vocab.mode != "interleaved":
            raise JaxslmError(f"a {self.vocab.mode} model has no speech to generate from")
        ids = list(self.bos)
        if len(pieces) == 1 and pieces[0].modality == output == "speech":
            ids += self._units(pieces[0])
        else:
            previous = None
            for piece in pieces:
                if piece.modality != previous:
                    ids.append(self._marker(piece.modality))
                ids += self._units(piece) if piece.modality == "speech" else self._text(piece)
                previous = piece.modality
        return [*ids, self._marker(output)]

    def units_of(self, ids: list[int]) -> list[int]:
        """The speech units among generated ids (markers, BOS and EOS dropped)."""
        offset, count = self.vocab.unit_offset, self.vocab.num_units
        return [i - offset for i in ids if offset <= i < offset + count]

    def text_of(self, ids: list[int]) -> str:
        """The text of generated ids (units, markers, BOS and EOS dropped)."""
        if self.tokenizer is None:
            raise JaxslmError(f"a {self.vocab.mode} model has no text tokenizer")
        specials = {*self.bos, *self.vocab.eos_ids}
        kept = [i for i in ids if i < self.vocab.text_size and i not in specials]
        return self.tokenizer.decode(kept)

    def _units(self, piece: Piece) -> list[int]:
        if not piece.units:
            raise JaxslmError("a speech piece of the prompt has no units")
        return self.vocab.units_to_ids(np.asarray(piece.units)).tolist()

    def _text(self, piece: Piece) -> list[int]:
        if self.tokenizer is None:
            raise JaxslmError(f"a {self.vocab.mode} model cannot read text prompts")
        ids = self.tokenizer.encode(piece.text, add_special_tokens=False)
        if not ids:
            raise JaxslmError("a text piece of the prompt is empty")
        return ids

    def _marker(self, modality: str) -> int:
        return self.vocab.speech_marker_id if modality == "speech" else self.vocab.text_marker_id


def cut_units(
    units: list[int], durations: list[int], frame_seconds: float, seconds: float | None
) -> list[int]:
    """The units that end within the first `seconds` of audio (at least one); all if None."""
    if seconds is None:
        return list(units)
    ends = np.cumsum(durations) * frame_seconds
    keep = max(1, int(np.searchsorted(ends, seconds + 1e-9, side="right")))
    return list(units[:keep])
