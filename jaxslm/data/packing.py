"""Pack variable-length documents into fixed-length rows of next-token pairs.

A document of L tokens gives L - 1 (input, target) pairs. Documents with more pairs than the
row length are cut into row-length chunks (never dropped); the rest are placed first-fit into
a few open rows. Each placed piece is a segment: `segment_ids` count segments from 1 within a
row (0 = padding) and `positions` restart at 0 in every segment. `modality` is that of the
target token, so per-modality losses need no further lookup.
"""

from __future__ import annotations

import base64
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

Segment = tuple[np.ndarray, np.ndarray, np.ndarray]  # inputs, targets, target modality


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
            done.append(_assemble([_segment(tokens, modality, start, self.length)], self.length))
            start += self.length
        if pairs - start > 0:
            done.extend(self._place(_segment(tokens, modality, start, pairs - start)))
        return done

    def _place(self, segment: Segment) -> list[dict[str, np.ndarray]]:
        size = len(segment[0])
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
        """The open rows as JSON-serialisable strings (cheap to copy, as Grain does often)."""
        return {"rows": [[[encode_array(p) for p in seg] for seg in row] for row in self.rows]}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore open rows saved by `get_state`."""
        self.rows = [[tuple(decode_array(p) for p in seg) for seg in row] for row in state["rows"]]
        self.fill = [sum(len(seg[0]) for seg in row) for row in self.rows]


def encode_array(array: np.ndarray) -> str:
    """A 1-D array as 'dtype:base64' text."""
    return f"{array.dtype.str}:{base64.b64encode(array.tobytes()).decode()}"


def decode_array(text: str) -> np.ndarray:
    """Inverse of `encode_array`."""
    dtype, data = text.split(":", 1)
    return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).copy()


def _segment(tokens: np.ndarray, modality: np.ndarray, start: int, size: int) -> Segment:
    return (
        np.asarray(tokens[start : start + size], np.int32),
        np.asarray(tokens[start + 1 : start + size + 1], np.int32),
        np.asarray(modality[start + 1 : start + size + 1], np.int8),
    )


def _assemble(segments: list[Segment], length: int) -> dict[str, np.ndarray]:
    """One row of `length` from its segments; the tail is padding."""
    row = {name: np.zeros(length, dtype) for name, dtype in ROW_FIELDS.items()}
    offset = 0
    for number, (inputs, targets, modality) in enumerate(segments, start=1):
        end = offset + len(inputs)
        row["tokens"][offset:end] = inputs
        row["targets"][offset:end] = targets
        row["modality"][offset:end] = modality
        row["loss_mask"][offset:end] = 1.0
        row["segment_ids"][offset:end] = number
        row["positions"][offset:end] = np.arange(len(inputs))
        offset = end
    return row
