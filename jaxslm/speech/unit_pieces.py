"""Unigram-compressed speech tokens: a SentencePiece unigram model over deduplicated unit
sequences, the coarser tokenization of Cuervo & Marxer's "Scaling Properties of Speech Language
Models" (EMNLP 2024).

Unit i is written as the code point U+E000 + i (Unicode's Private Use Area, so no normalizer,
script or whitespace rule of SentencePiece touches it) and an utterance's deduplicated units as
one string. The unigram model is trained on those strings plus one string per unit, so every
unit is a piece of its own and any unit sequence encodes with no `<unk>`. Speech token p (what
a model sees as unit p) is SentencePiece piece p + 1: piece 0 is `<unk>`, never produced.
Decoding a token sequence is the concatenation of its pieces' units, so
units -> tokens -> units is exact.

A model is a directory: `unigram.model` (SentencePiece) and `unit_pieces.json` (`num_units`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_directory

FIRST_CODE_POINT = 0xE000
MAX_UNITS = 0xF8FF - 0xE000 + 1  # the Basic Multilingual Plane's Private Use Area
MODEL_FILE, INFO_FILE = "unigram.model", "unit_pieces.json"
MAX_PIECE_UNITS = 16  # SentencePiece's default max_sentencepiece_length


def units_to_text(units: np.ndarray) -> str:
    """Deduplicated units as one string of Private Use Area code points."""
    return "".join(map(chr, np.asarray(units, dtype=np.int64) + FIRST_CODE_POINT))


def train_unit_pieces(
    sequences: Iterable[np.ndarray],
    num_units: int,
    vocab_size: int,
    out_dir: str | Path,
    overwrite: bool = False,
) -> UnitPieces:
    """Train a unigram model of `vocab_size` speech tokens over deduplicated unit `sequences`
    (deterministic: one thread) and write it to `out_dir`."""
    if not 0 < num_units <= MAX_UNITS:
        raise JaxslmError(f"unit pieces: num_units {num_units} must be in 1..{MAX_UNITS}")
    if vocab_size <= num_units:
        raise JaxslmError(
            f"unit pieces: --vocab-size {vocab_size} must exceed the {num_units} units it "
            "starts from"
        )
    texts = [chr(FIRST_CODE_POINT + unit) for unit in range(num_units)]
    longest = 1
    for units in sequences:
        texts.append(units_to_text(units))
        longest = max(longest, len(texts[-1]))
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size + 1,  # + <unk>
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_by_unicode_script=False,
        split_by_whitespace=False,
        max_sentence_length=4 * longest + 16,
        max_sentencepiece_length=MAX_PIECE_UNITS,
        num_threads=1,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    with atomic_directory(out_dir, overwrite) as staging:
        (staging / MODEL_FILE).write_bytes(model.getvalue())
        (staging / INFO_FILE).write_text(json.dumps({"num_units": num_units}) + "\n")
    return UnitPieces.load(out_dir)


def unit_pieces_for(directory: str | Path | None, num_tokens: int) -> UnitPieces | None:
    """The model of `--unit-pieces DIRECTORY` (None without one) for a model with
    `num_tokens` speech units, which the unigram model's tokens must match."""
    if directory is None:
        return None
    pieces = UnitPieces.load(directory)
    if pieces.num_tokens != num_tokens:
        raise JaxslmError(
            f"--unit-pieces {directory} has {pieces.num_tokens} speech tokens but the model "
            f"has {num_tokens} units: give the unit_pieces/ of its training corpus"
        )
    return pieces


@dataclass(frozen=True)
class UnitPieces:
    """A trained unit-piece model: `encode` units to speech tokens, `decode` them back."""

    processor: spm.SentencePieceProcessor
    num_units: int
    piece_units: tuple[np.ndarray, ...]  # the units of each speech token

    @classmethod
    def load(cls, directory: str | Path) -> UnitPieces:
        """The model of a directory written by `train_unit_pieces`."""
        directory = Path(directory)
        for name in (MODEL_FILE, INFO_FILE):
            if not (directory / name).is_file():
                raise JaxslmError(
                    f"{directory / name} not found: train unit pieces with "
                    "`python -m jaxslm.data.unit_pieces`"
                )
        num_units = int(json.loads((directory / INFO_FILE).read_text())["num_units"])
        processor = spm.SentencePieceProcessor(model_file=str(directory / MODEL_FILE))
        pieces = [processor.id_to_piece(i) for i in range(1, processor.get_piece_size())]
        piece_units = tuple(
            np.array([ord(c) - FIRST_CODE_POINT for c in piece], np.int32) for piece in pieces
        )
        return cls(processor, num_units, piece_units)

    @property
    def num_tokens(self) -> int:
        """Speech tokens of the vocabulary (the units a model over them has)."""
        return len(self.piece_units)

    def encode(self, units: np.ndarray) -> np.ndarray:
        """Deduplicated units -> speech tokens (the unigram model's best segmentation)."""
        units = np.asarray(units)
        if units.size and (units.min() < 0 or units.max() >= self.num_units):
            raise JaxslmError(
                f"units {int(units.min())}..{int(units.max())} are outside the unit pieces "
                f"model's 0..{self.num_units - 1}: encode units of the tokenizer it was trained "
                "on"
            )
        ids = np.asarray(self.processor.encode(units_to_text(units)), np.int32)
        return ids - 1

    def decode(self, tokens: Iterable[int]) -> np.ndarray:
        """Speech tokens -> the units they spell."""
        parts = [self.piece_units[int(t)] for t in tokens]
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def encode_with_durations(
        self, units: np.ndarray, durations: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Speech tokens and the frames each lasts (the sum of its units' durations)."""
        tokens = self.encode(units)
        lengths = np.array([len(self.piece_units[t]) for t in tokens], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        sums = np.add.reduceat(np.asarray(durations, np.int64), starts) if len(tokens) else []
        return tokens, np.asarray(sums, np.int32)
