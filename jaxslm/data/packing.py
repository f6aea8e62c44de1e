"""Pack variable-length documents into fixed-length rows of next-token pairs.

A document of L tokens gives L - 1 (input, target) pairs. Documents with more pairs than the
row length are cut into row-length chunks (never dropped); the rest are placed first-fit into
a few open rows. Each placed piece is a segment: `segment_ids` count segments from 1 within a
row (0 = padding) and `positions` restart at 0 in every segment. `modality` is that of the
target token, so per-modality losses need no further lookup.
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
}

Segment = tuple[np.ndarray, np.ndarray]  # size + 1 tokens, their modality (views, no copies)


class Packer:
    """First-fit packer with at most `open_rows` partially filled rows."""

    def __init__(self, length: int, open_rows: int = 8):
        self.length = length
        self.open_rows = open_rows
        self.rows: list[list[Segment]] = []
        self.fill: list[int] = []

    def add(self, tokens: np.ndarray, modality: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Place one document; returns the rows this completed (possibly none)."""
        done = []
        pairs = len(tokens) - 1
        start = 0
        while pairs - start >= self.length:  # whole-row chunks of a long document
            piece = (
                tokens[start : start + self.length + 1],
                modality[start : start + self.length + 1],
            )
            done.append(_assemble([piece], self.length))
            start += self.length
        if pairs - start > 0:
            done.extend(self._place((tokens[start:], modality[start:]), pairs - start))
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
        per row its segments' tokens and modality end to end, and the segment sizes."""
        return {
            "rows": [
                {
                    "sizes": [len(tokens) for tokens, _ in row],
                    "tokens": encode_array(np.concatenate([tokens for tokens, _ in row])),
                    "modality": encode_array(np.concatenate([codes for _, codes in row])),
                }
                for row in self.rows
            ]
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore open rows saved by `get_state`."""
        self.rows, self.fill = [], []
        for row in state["rows"]:
            tokens, codes = decode_array(row["tokens"]), decode_array(row["modality"])
            bounds = np.cumsum([0, *row["sizes"]]).tolist()
            self.rows.append([(tokens[a:b], codes[a:b]) for a, b in itertools.pairwise(bounds)])
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
    sizes = [len(tokens) - 1 for tokens, _ in segments]
    used = sum(sizes)
    row = {name: np.zeros(length, dtype) for name, dtype in ROW_FIELDS.items()}
    row["tokens"][:used] = np.concatenate([tokens[:-1] for tokens, _ in segments])
    row["targets"][:used] = np.concatenate([tokens[1:] for tokens, _ in segments])
    row["modality"][:used] = np.concatenate([codes[1:] for _, codes in segments])
    row["loss_mask"][:used] = 1.0
    row["segment_ids"][:used] = np.repeat(np.arange(1, len(sizes) + 1, dtype=np.int32), sizes)
    starts = np.cumsum([0, *sizes[:-1]])
    row["positions"][:used] = np.arange(used, dtype=np.int32) - np.repeat(starts, sizes)
    return row
