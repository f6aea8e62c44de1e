"""The two record types of a corpus: speech utterances (units + word alignments) and text
documents, their validation, and unit de-duplication."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Word:
    """One aligned word. `text` carries its own leading space: a transcript is ''.join(words)."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Utterance:
    """A spoken utterance as deduplicated units.

    `durations[i]` is the number of frames unit i lasted, so unit i ends at
    `cumsum(durations)[i] * frame_seconds` seconds.
    """

    id: str
    units: np.ndarray
    durations: np.ndarray
    frame_seconds: float
    words: tuple[Word, ...] = ()
    transcript: str | None = None
    speaker: str | None = None

    def unit_end_times(self) -> np.ndarray:
        """End time in seconds of every unit."""
        return np.cumsum(self.durations) * self.frame_seconds

    @property
    def seconds(self) -> float:
        """Length of the audio in seconds."""
        return float(np.sum(self.durations)) * self.frame_seconds


@dataclass(frozen=True)
class TextDocument:
    """A text document of the text stream."""

    id: str
    text: str = field(default="")


def dedup(frames) -> tuple[np.ndarray, np.ndarray]:
    """Merge runs of repeated frame units: (units, durations in frames), both int32."""
    frames = np.asarray(frames, dtype=np.int64)
    if frames.size == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    starts = np.flatnonzero(np.concatenate([[True], frames[1:] != frames[:-1]]))
    durations = np.diff(np.concatenate([starts, [frames.size]]))
    return frames[starts].astype(np.int32), durations.astype(np.int32)


def units_problem(lowest: int, highest: int, num_units: int) -> str | None:
    """Why units spanning [lowest, highest] cannot be used with `num_units` units, or None."""
    if lowest < 0 or highest >= num_units:
        return f"units: out of range: values {lowest}..{highest} outside [0, {num_units})"
    return None


def durations_problem(lowest: int, highest: int) -> str | None:
    """Why frame counts spanning [lowest, highest] cannot be stored, or None."""
    if lowest <= 0:
        return "durations: not positive: frame counts must be >= 1"
    if highest > INT32_MAX:
        return f"durations: too large: {highest} frames, at most {INT32_MAX}"
    return None


def end_slack(frame_seconds: float) -> float:
    """How far past the last unit's end a word may end, in seconds: the encoder's frames stop
    up to a frame plus its 25 ms receptive field short of the audio, and aligners round to
    10 ms (a word there still gets every unit up to the end, as slamkit's `bisect_right`)."""
    return frame_seconds + 0.05


def problem_with(utterance: Utterance, num_units: int, tolerance: float = 1e-3) -> str | None:
    """Why `utterance` cannot be used, as 'field: reason: detail', or None if it can.

    Checks: non-empty units; units in [0, num_units); one positive duration per unit; finite
    word times that do not go backwards (within `tolerance` s) and do not end more than
    `end_slack(frame_seconds)` after the last unit.
    """
    units, durations = np.asarray(utterance.units), np.asarray(utterance.durations)
    if units.size == 0:
        return "units: empty utterance: no units"
    problem = units_problem(int(units.min()), int(units.max()), num_units)
    if problem is not None:
        return problem
    if durations.shape != units.shape:
        return f"durations: length mismatch: {durations.size} values for {units.size} units"
    problem = durations_problem(int(durations.min()), int(durations.max()))
    if problem is not None:
        return problem
    previous_end = 0.0
    for index, word in enumerate(utterance.words):
        if not (math.isfinite(word.start) and math.isfinite(word.end)):
            return (
                f"words: not finite: word {index} ({word.text.strip()!r}) has times "
                f"{word.start}..{word.end}"
            )
        if word.end < word.start or word.start < previous_end - tolerance:
            return f"words: times go backwards: word {index} ({word.text.strip()!r})"
        if word.end > utterance.seconds + end_slack(utterance.frame_seconds):
            return (
                f"words: past the audio: word {index} ({word.text.strip()!r}) ends at "
                f"{word.end:.3f}s, the units at {utterance.seconds:.3f}s: are the alignments "
                "those of this audio?"
            )
        previous_end = word.end
    return None
