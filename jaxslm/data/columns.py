"""The columnar copy of a corpus split: flat numpy arrays plus offsets, memory-mapped.

The TFDS ArrayRecord records stay the corpus's interchange format; the pipeline reads this
copy instead, because decoding a TFDS record costs tens of microseconds per feature while a
slice of a memory-mapped array costs nothing. Record i here is record i of `Corpus.source`.

Speech columns: `units`, `durations` (int32, all utterances end to end) cut by `unit_offsets`;
`word_starts`, `word_ends` (float64, as slamkit compares them) cut by `word_offsets`;
`word_text` (UTF-8 bytes of every word, leading spaces included) cut per word by
`word_text_offsets`, so the text of words [a, b) is one slice. Text columns: `text` (UTF-8
bytes) cut by `text_offsets`.

Corpora built before word times were float64 hold float32 ones; they are widened when read
(`widen_times`), with a warning that says to rebuild.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxslm.data.records import TextDocument, Utterance

SPEECH_COLUMNS = (
    "units",
    "durations",
    "unit_offsets",
    "word_starts",
    "word_ends",
    "word_offsets",
    "word_text",
    "word_text_offsets",
)
TEXT_COLUMNS = ("text", "text_offsets")
TIME_COLUMNS = ("word_starts", "word_ends")
MAX_DECIMALS = 9


@dataclass(frozen=True)
class Columns:
    """One stream split as named flat arrays (see the module docstring)."""

    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        offsets = self.arrays.get("unit_offsets", self.arrays.get("text_offsets"))
        return len(offsets) - 1

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def _offsets(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def speech_columns(utterances: Iterable[Utterance]) -> Columns:
    """Speech columns of `utterances`, in order."""
    units, durations, starts, ends, texts = [], [], [], [], []
    unit_counts, word_counts = [], []
    for utterance in utterances:
        units.append(np.asarray(utterance.units, np.int32))
        durations.append(np.asarray(utterance.durations, np.int32))
        unit_counts.append(units[-1].size)
        word_counts.append(len(utterance.words))
        starts += [w.start for w in utterance.words]
        ends += [w.end for w in utterance.words]
        texts += [w.text.encode() for w in utterance.words]
    return Columns(
        {
            "units": np.concatenate([np.zeros(0, np.int32), *units]),
            "durations": np.concatenate([np.zeros(0, np.int32), *durations]),
            "unit_offsets": _offsets(unit_counts),
            "word_starts": np.asarray(starts, np.float64),
            "word_ends": np.asarray(ends, np.float64),
            "word_offsets": _offsets(word_counts),
            "word_text": np.frombuffer(b"".join(texts), np.uint8),
            "word_text_offsets": _offsets([len(t) for t in texts]),
        }
    )


def text_columns(documents: Iterable[TextDocument]) -> Columns:
    """Text columns of `documents`, in order."""
    texts = [document.text.encode() for document in documents]
    return Columns(
        {
            "text": np.frombuffer(b"".join(texts), np.uint8),
            "text_offsets": _offsets([len(t) for t in texts]),
        }
    )


def save_columns(columns: Columns, directory: Path) -> None:
    """Write one .npy file per column into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in columns.arrays.items():
        np.save(directory / f"{name}.npy", array)


def load_columns(directory: Path, stream: str) -> Columns:
    """Memory-map the columns saved by `save_columns` (as plain ndarray views of the maps);
    float32 word times of an older corpus are widened in memory (`widen_times`)."""
    names = SPEECH_COLUMNS if stream == "speech" else TEXT_COLUMNS
    arrays = {name: np.asarray(np.load(directory / f"{name}.npy", mmap_mode="r")) for name in names}
    if stream == "speech" and arrays["word_starts"].dtype == np.float32:
        warn_float32_times(directory)
        arrays.update({name: widen_times(arrays[name]) for name in TIME_COLUMNS})
    return Columns(arrays)


def widen_times(times: np.ndarray) -> np.ndarray:
    """float64 of float32 word times: each becomes the shortest decimal (at most MAX_DECIMALS
    places) that rounds to it in float32, the value the alignment file held whenever it had
    about 7 significant digits or fewer (a 0.01 s grid has); others keep their float32 value."""
    narrow = np.asarray(times, np.float32)
    exact = narrow.astype(np.float64)
    wide, found = exact.copy(), np.zeros(exact.shape, bool)
    for places in range(MAX_DECIMALS + 1):
        candidate = np.round(exact, places)
        hit = ~found & (candidate.astype(np.float32) == narrow)
        wide[hit], found = candidate[hit], found | hit
    return wide


def warn_float32_times(where: object) -> None:
    """Say that a corpus's word times are float32 and how to get float64 ones."""
    warnings.warn(
        f"{where}: word times are float32 (built by an older jaxslm); they are read as the "
        "shortest decimals they round from. Rebuild the corpus (python -m jaxslm.data.build) "
        "to store float64 times",
        stacklevel=3,
    )
