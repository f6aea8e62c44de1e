"""Pack variable-length documents into fixed-length rows of next-token pairs.

A document is cut as slamkit cuts it (`cut_document`): into pieces of at most `length` tokens,
each of whose first token is an input only, so a piece of n tokens gives n - 1 (input, target)
pairs and fits a row of `length` positions. Pieces are placed first-fit into a few open rows
(a whole-length piece takes a row of its own). Each placed piece is a segment: `segment_ids`
count segments from 1 within a row (0 = padding) and `positions` restart at 0 in every
segment. `modality` is that of the target token, so per-modality losses need no further
lookup, and `stream` the stream the segment came from (0 text, 1 interleaved, 2 speech).
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

import numpy as np

ROW_FIELDS = {
    "tokens": np.int32,
    "targets": np.int32,
    "loss_mask": np.float32,
    "segment_ids": np.int32,
    "positions": np.int32,
    "modality": np.int8,
    "stream": np.int8,
}

Segment = tuple[np.ndarray, np.ndarray, int]  # size + 1 tokens, their modality, the stream


def cut_document(tokens: np.ndarray, modality: np.ndarray, length: int) -> list[tuple]:
    """(tokens, modality) views of consecutive pieces of at most `length` tokens: slamkit's
    `chunk_texts` (slamkit/data/hf_dataset.py) at `context_len` = `length`. Pieces do not
    overlap, so the token that starts a piece is no piece's target."""
    return [
        (tokens[start : start + length], modality[start : start + length])
        for start in range(0, len(tokens), length)
    ]


class Packer:
    """First-fit packer with at most `open_rows` partially filled rows."""

    def __init__(self, length: int, open_rows: int = 8):
        self.length = length
        self.open_rows = open_rows
        self.rows: list[list[Segment]] = []
        self.fill: list[int] = []

    def add(
        self, tokens: np.ndarray, modality: np.ndarray, stream: int = 0
    ) -> list[dict[str, np.ndarray]]:
        """Place one document (cut by `cut_document`); returns the rows this completed."""
        done = []
        for piece_tokens, piece_modality in cut_document(tokens, modality, self.length):
            pairs = len(piece_tokens) - 1
            if pairs == self.length - 1:  # a whole-length piece: a row of its own
                done.append(_assemble([(piece_tokens, piece_modality, stream)], self.length))
            elif pairs > 0:
                done.extend(self._place((piece_tokens, piece_modality, stream), pairs))
        return done

    def _place(self, segment: Segment, size: int) -> list[dict[str, np.ndarray]]:
        for index, used in enumerate(self.fill):
            if used + size <= self.length:
                self.rows[index].append(segment)
                self.fill[index] += size
                return self._close(index) if self.fill[index] == self.length else []
        done = self._close(0) if len(self.rows) == self.open_rows else []
        self.rows.append([segment])
        self.fill.append(size)
        if size == self.length:
            done.extend(self._close(len(self.rows) - 1))
        return done

    def _close(self, index: int) -> list[dict[str, np.ndarray]]:
        segments = self.rows.pop(index)
        self.fill.pop(index)
        return [_assemble(segments, self.length)]

    def flush(self) -> list[dict[str, np.ndarray]]:
        """Close every open row (end of data)."""
        done = [_assemble(segments, self.length) for segments in self.rows]
        self.rows, self.fill = [], []
        return done

    def get_state(self) -> dict[str, Any]:
        """The open rows as JSON-serialisable strings (cheap to copy, as Grain does often):
        per row its segments' tokens and modality end to end, the segment sizes and streams."""
        return {
            "rows": [
                {
                    "sizes": [len(tokens) for tokens, _, _ in row],
                    "tokens": encode_array(np.concatenate([tokens for tokens, _, _ in row])),
                    "modality": encode_array(np.concatenate([codes for _, codes, _ in row])),
                    "streams": [stream for _, _, stream in row],
                }
                for row in self.rows
            ]
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore open rows saved by `get_state`."""
        self.rows, self.fill = [], []
        for row in state["rows"]:
            tokens, codes = decode_array(row["tokens"]), decode_array(row["modality"])
            bounds = itertools.pairwise(np.cumsum([0, *row["sizes"]]).tolist())
            self.rows.append(
                [
                    (tokens[a:b], codes[a:b], stream)
                    for (a, b), stream in zip(bounds, row["streams"], strict=True)
                ]
            )
            self.fill.append(sum(row["sizes"]) - len(row["sizes"]))


def encode_array(array: np.ndarray) -> str:
    """A 1-D array as 'dtype:base64' text."""
    return f"{array.dtype.str}:{base64.b64encode(array.tobytes()).decode()}"


def decode_array(text: str) -> np.ndarray:
    """Inverse of `encode_array`."""
    dtype, data = text.split(":", 1)
    return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).copy()


def _assemble(segments: list[Segment], length: int) -> dict[str, np.ndarray]:
    """One row of `length` from its segments; the tail is padding."""
    sizes = [len(tokens) - 1 for tokens, _, _ in segments]
    used = sum(sizes)
    row = {name: np.zeros(length, dtype) for name, dtype in ROW_FIELDS.items()}
    row["tokens"][:used] = np.concatenate([tokens[:-1] for tokens, _, _ in segments])
    row["targets"][:used] = np.concatenate([tokens[1:] for tokens, _, _ in segments])
    row["modality"][:used] = np.concatenate([codes[1:] for _, codes, _ in segments])
    row["stream"][:used] = np.repeat([stream for _, _, stream in segments], sizes)
    row["loss_mask"][:used] = 1.0
    row["segment_ids"][:used] = np.repeat(np.arange(1, len(sizes) + 1, dtype=np.int32), sizes)
    starts = np.cumsum([0, *sizes[:-1]])
    row["positions"][:used] = np.arange(used, dtype=np.int32) - np.repeat(starts, sizes)
    return row
