"""Corpus records -> token documents of the three streams (see jaxslm.data.pipeline).

`DocumentEncoder` encodes one decoded TFDS record at a time: the plain reference. The pipeline
uses `ChunkEncoder`, which encodes a few hundred records of the columnar copy at once and gives
the same documents: one batched call of the text tokenizer, one gather for every unit and text
piece, and a vectorised bisection for the speech runs of interleaved utterances.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxslm.data.columns import Columns
from jaxslm.data.corpus import Corpus, example_to_document, example_to_utterance
from jaxslm.data.interleave import InterleaveConfig, interleave, record_flags
from jaxslm.text_tokenizer import HFTokenizer, SentencePieceTokenizer, TextTokenizer
from jaxslm.vocab import MARKER, SPEECH, TEXT, SpeechVocab

Document = tuple[np.ndarray, np.ndarray]  # token ids int32, modality int8
CONSTANT, UNITS, TEXT_RUN = 0, 1, 2  # kinds of the pieces a chunk's documents are made of


class DocumentEncoder:
    """Decoded TFDS records -> (token ids, modality) documents, one record at a time."""

    def __init__(
        self,
        corpus: Corpus,
        tokenizer: TextTokenizer | None,
        vocab: SpeechVocab,
        interleave_config: InterleaveConfig,
    ):
        self.frame_seconds, self.tokenizer, self.vocab = corpus.frame_seconds, tokenizer, vocab
        self.interleave_config = interleave_config
        self.bos = [] if tokenizer is None or tokenizer.bos_id is None else [tokenizer.bos_id]

    def text(self, example: dict[str, Any]) -> Document:
        """A text document: BOS (if the family has one) + its tokens."""
        ids = self.tokenizer.encode(example_to_document(example).text, add_special_tokens=False)
        tokens = self.bos + ids
        return np.asarray(tokens, np.int32), np.full(len(tokens), TEXT, np.int8)

    def speech(self, example: dict[str, Any]) -> Document:
        """Plain units: `<S> units <S>` (speech-only) or BOS + units (interleaved models)."""
        units = self.vocab.units_to_ids(example["units"])
        if self.vocab.mode == "speech-only":
            boundary = [self.vocab.bos_id]
            tokens = np.concatenate([boundary, units, boundary]).astype(np.int32)
            modality = np.full(tokens.size, SPEECH, np.int8)
            modality[[0, -1]] = MARKER
            return tokens, modality
        tokens = np.concatenate([self.bos, units]).astype(np.int32)
        modality = np.full(tokens.size, SPEECH, np.int8)
        modality[: len(self.bos)] = MARKER
        return tokens, modality

    def interleaved(self, example: dict[str, Any], record: int, epoch: int) -> Document | None:
        """BOS + the interleaved sequence of a word-aligned utterance (None without words)."""
        if len(example["word_texts"]) == 0:
            return None
        utterance = example_to_utterance(example, self.frame_seconds)
        encode = lambda text: self.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        tokens, modality = interleave(
            utterance, record, epoch, self.interleave_config, encode, self.vocab
        )
        return (
            np.concatenate([self.bos, tokens]).astype(np.int32),
            np.concatenate([np.full(len(self.bos), MARKER), modality]).astype(np.int8),
        )


@dataclass(frozen=True)
class Chunk:
    """Documents end to end: document i is `tokens[offsets[i]:offsets[i + 1]]`."""

    tokens: np.ndarray
    modality: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def document(self, index: int) -> Document:
        """Views of document `index`."""
        a, b = self.offsets[index], self.offsets[index + 1]
        return self.tokens[a:b], self.modality[a:b]


def batch_encoder(tokenizer: TextTokenizer, threads: int) -> Callable[[list[str]], list[list[int]]]:
    """`encode(text, add_special_tokens=False)` of many texts in one call where the tokenizer
    library has one (SentencePiece with `threads`, HF tokenizers), else one by one."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        return lambda texts: tokenizer.processor.encode(texts, num_threads=threads)
    if isinstance(tokenizer, HFTokenizer):
        encode = tokenizer.tokenizer.encode_batch_fast
        return lambda texts: [e.ids for e in encode(texts, add_special_tokens=False)]
    return lambda texts: [tokenizer.encode(text, add_special_tokens=False) for text in texts]


class _Pieces:
    """The pieces of a chunk's documents, in order: (kind, reference, lo, hi)."""

    def __init__(self):
        self.kind: list[int] = []
        self.ref: list[int] = []
        self.lo: list[int] = []
        self.hi: list[int] = []
        self.document_ends: list[int] = []

    def add(self, kind: int, ref: int, lo: int = 0, hi: int = 0) -> None:
        self.kind.append(kind)
        self.ref.append(ref)
        self.lo.append(lo)
        self.hi.append(hi)

    def end_document(self) -> None:
        self.document_ends.append(len(self.kind))


class ChunkEncoder:
    """Many records of the columnar copies -> one `Chunk`, documents as `DocumentEncoder`'s."""

    def __init__(
        self,
        speech: Columns | None,
        text: Columns | None,
        frame_seconds: float,
        tokenizer: TextTokenizer | None,
        vocab: SpeechVocab,
        interleave_config: InterleaveConfig,
        threads: int = 1,
    ):
        self.speech, self.text, self.frame_seconds = speech, text, frame_seconds
        self.vocab, self.interleave_config = vocab, interleave_config
        self.encode_texts = None if tokenizer is None else batch_encoder(tokenizer, threads)
        self.text_bytes = None if text is None else memoryview(text["text"])
        self.word_bytes = None if speech is None else memoryview(speech["word_text"])
        bos = None if tokenizer is None else tokenizer.bos_id
        constants = {"text_bos": (bos, TEXT), "bos": (bos, MARKER)}
        if vocab.mode == "speech-only":
            constants["bos"] = (vocab.bos_id, MARKER)
        if vocab.mode == "interleaved":
            constants["speech"] = (vocab.speech_marker_id, MARKER)
            constants["text"] = (vocab.text_marker_id, MARKER)
        present = {name: value for name, value in constants.items() if value[0] is not None}
        self.constant = {name: index for index, name in enumerate(present)}
        self.constant_ids = np.asarray([v[0] for v in present.values()], np.int32)
        self.constant_modality = np.asarray([v[1] for v in present.values()], np.int8)

    def encode(self, documents: list[tuple[int, int, int]]) -> Chunk:
        """Documents of (stream, record, epoch) triples, one per triple; stream 0 text,
        1 interleaved, 2 speech. An interleaved record without words gives an empty document."""
        pieces, slots, texts, queries = _Pieces(), [], [], []
        for stream, record, epoch in documents:
            if stream == 0:
                self._text_document(pieces, texts, record)
            elif stream == 1:
                self._interleaved_document(pieces, slots, texts, queries, record, epoch)
            else:
                self._speech_document(pieces, slots, record)
        return self._assemble(pieces, slots, texts, queries)

    def _text_document(self, pieces: _Pieces, texts: list[str], record: int) -> None:
        offsets = self.text["text_offsets"]
        texts.append(str(self.text_bytes[offsets[record] : offsets[record + 1]], "utf-8"))
        if "text_bos" in self.constant:
            pieces.add(CONSTANT, self.constant["text_bos"])
        pieces.add(TEXT_RUN, len(texts) - 1)
        pieces.end_document()

    def _speech_document(self, pieces: _Pieces, slots: list[int], record: int) -> None:
        slots.append(record)
        size = int(self.speech["unit_offsets"][record + 1] - self.speech["unit_offsets"][record])
        if "bos" in self.constant:
            pieces.add(CONSTANT, self.constant["bos"])
        pieces.add(UNITS, len(slots) - 1, 0, size)
        if self.vocab.mode == "speech-only":
            pieces.add(CONSTANT, self.constant["bos"])
        pieces.end_document()

    def _interleaved_document(
        self,
        pieces: _Pieces,
        slots: list[int],
        texts: list[str],
        queries: list[tuple[int, int, int]],
        record: int,
        epoch: int,
    ) -> None:
        """BOS, then a marker and its content per run of same-modality words; a speech run's
        unit bounds are left to `_assemble` (query: piece, first word, last word)."""
        first_word = int(self.speech["word_offsets"][record])
        num_words = int(self.speech["word_offsets"][record + 1]) - first_word
        if num_words == 0:
            pieces.end_document()
            return
        flags = record_flags(self.interleave_config, num_words, record, epoch)
        slots.append(record)
        if "bos" in self.constant:
            pieces.add(CONSTANT, self.constant["bos"])
        text_offsets = self.speech["word_text_offsets"]
        start = 0
        for stop in [*(i for i in range(1, num_words) if flags[i] != flags[i - 1]), num_words]:
            a, b = first_word + start, first_word + stop
            if flags[start]:
                pieces.add(CONSTANT, self.constant["speech"])
                queries.append((len(pieces.kind), a, b - 1))
                pieces.add(UNITS, len(slots) - 1)
            else:
                pieces.add(CONSTANT, self.constant["text"])
                texts.append(str(self.word_bytes[text_offsets[a] : text_offsets[b]], "utf-8"))
                pieces.add(TEXT_RUN, len(texts) - 1)
            start = stop
        pieces.end_document()

    def _assemble(
        self,
        pieces: _Pieces,
        slots: list[int],
        texts: list[str],
        queries: list[tuple[int, int, int]],
    ) -> Chunk:
        """Gather every piece from one pool: constants, the slots' units, the texts' ids."""
        kind, ref = np.asarray(pieces.kind, np.int64), np.asarray(pieces.ref, np.int64)
        lo, hi = np.asarray(pieces.lo, np.int64), np.asarray(pieces.hi, np.int64)
        units, unit_base = self._slot_units(slots)
        if queries:
            where, first, last = (
                np.asarray(column, np.int64) for column in zip(*queries, strict=True)
            )
            slot = ref[where]
            ends = self._end_times(slots, unit_base)
            lo[where], hi[where] = _speech_bounds(
                ends, unit_base[slot], unit_base[slot + 1], first, last, self.speech
            )
            lo[where] -= unit_base[slot]
            hi[where] -= unit_base[slot]
        ids = self.encode_texts(texts) if texts else []
        text_lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        text_ids = np.fromiter(
            (i for piece in ids for i in piece), np.int32, int(text_lengths.sum())
        )
        text_base = np.concatenate([[0], np.cumsum(text_lengths)])
        pool = np.concatenate([self.constant_ids, units, text_ids])
        pool_modality = np.concatenate(
            [
                self.constant_modality,
                np.full(units.size, SPEECH, np.int8),
                np.full(text_ids.size, TEXT, np.int8),
            ]
        )
        head, text_head = len(self.constant_ids), len(self.constant_ids) + units.size
        is_units, is_text = kind == UNITS, kind == TEXT_RUN
        starts = np.where(is_units, head + unit_base[np.where(is_units, ref, 0)] + lo, ref)
        starts = np.where(is_text, text_head + text_base[np.where(is_text, ref, 0)], starts)
        lengths = np.where(is_units, hi - lo, 1)
        lengths = np.where(is_text, text_lengths[np.where(is_text, ref, 0)] if ids else 0, lengths)
        index = _ranges(starts, lengths)
        ends = np.concatenate([[0], np.cumsum(lengths)])
        offsets = np.concatenate([[0], ends[np.asarray(pieces.document_ends, np.int64)]])
        return Chunk(pool[index], pool_modality[index], offsets.astype(np.int64))

    def _slot_units(self, slots: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of the slots' units end to end, and where each slot starts (+ the end)."""
        if not slots:
            return np.zeros(0, np.int32), np.zeros(1, np.int64)
        records = np.asarray(slots, np.int64)
        offsets = self.speech["unit_offsets"]
        starts, sizes = offsets[records], offsets[records + 1] - offsets[records]
        units = self.speech["units"][_ranges(starts, sizes)] + np.int32(self.vocab.unit_offset)
        return units.astype(np.int32), np.concatenate([[0], np.cumsum(sizes)])

    def _end_times(self, slots: list[int], unit_base: np.ndarray) -> np.ndarray:
        """End time in seconds of every gathered unit, as `Utterance.unit_end_times` has it."""
        records = np.asarray(slots, np.int64)
        offsets = self.speech["unit_offsets"]
        sizes = np.diff(unit_base)
        durations = self.speech["durations"][_ranges(offsets[records], sizes)].astype(np.int64)
        frames = np.cumsum(durations)
        frames -= np.repeat(frames[unit_base[:-1] - 1] * (unit_base[:-1] > 0), sizes)
        return frames * self.frame_seconds


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices start_i, ..., start_i + length_i - 1 of every range, end to end."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    shifts = np.repeat(np.asarray(starts, np.int64) - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shifts


def _speech_bounds(
    ends: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    speech: Columns,
) -> tuple[np.ndarray, np.ndarray]:
    """Per speech run, the units with start of first word <= end time <= end of last word:
    `bisect_left` / `bisect_right` within each run's utterance, on float64 times as slamkit
    (docs/reference.md section 3)."""
    start_times, end_times = speech["word_starts"][first], speech["word_ends"][last]
    return _bisect(ends, lo, hi, start_times, False), _bisect(ends, lo, hi, end_times, True)


def _bisect(values, lo, hi, targets, right: bool) -> np.ndarray:
    """Vectorised `bisect_left` (or `bisect_right`) of each target in values[lo:hi]."""
    lo, hi = lo.copy(), hi.copy()
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        probe = values[np.minimum(mid, len(values) - 1)]
        go_right = active & ((probe <= targets) if right else (probe < targets))
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)
