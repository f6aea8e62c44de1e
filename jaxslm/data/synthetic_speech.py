"""The built-in toy language's speakers: every speaker renders each phone as a few unit ids
with random durations, and silence units separate sentences and pauses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from jaxslm.data.records import dedup
from jaxslm.data.synthetic_grammar import CONSONANTS, VOWELS, Sentences

if TYPE_CHECKING:
    from jaxslm.data.synthetic import SyntheticConfig

_SILENCE_UNITS = 2


class Voices:
    """Speakers: per-speaker phone -> unit renderings, speaking rates, and silence units."""

    def __init__(self, config: SyntheticConfig, rng: np.random.Generator) -> None:
        self.config = config
        order = rng.permutation(config.num_units)
        self.silence, self.pool = order[:_SILENCE_UNITS], np.sort(order[_SILENCE_UNITS:])
        base = _base_renderings(rng, self.pool)
        self.renderings = [
            _vary(rng, base, self.pool, config.speaker_variation)
            for _ in range(config.num_speakers)
        ]
        self.rates = rng.uniform(0.2, 0.6, size=config.num_speakers)
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def pronunciation(self, word: str, speaker: int) -> np.ndarray:
        """The unit runs of `word` (spelled one letter per phone) for `speaker`."""
        key = (word, speaker)
        if key not in self._cache:
            phones = self.renderings[speaker]
            self._cache[key] = np.concatenate([phones[phone] for phone in word])
            self._cache[key].flags.writeable = False
        return self._cache[key]

    def lexical_coverage(self, units: Sequence[int], lexicon: Iterable[str]) -> float:
        """Share of the non-silence units of `units` (deduplicated or not) that a parse into
        pronunciations of `lexicon` words (any speaker) covers."""
        silence = {int(u) for u in self.silence}
        words: dict[int, set[tuple[int, ...]]] = {}
        for word in lexicon:
            for speaker in range(self.config.num_speakers):
                spoken = tuple(dedup(self.pronunciation(word, speaker))[0].tolist())
                words.setdefault(spoken[0], set()).add(spoken)
        runs = dedup(np.asarray(units))[0].tolist()
        covered = total = 0
        segment: list[int] = []
        for unit in [*runs, next(iter(silence))]:
            if unit not in silence:
                segment.append(unit)
                continue
            covered += _longest_cover(segment, words)
            total += len(segment)
            segment = []
        return covered / total if total else 0.0

    def render(
        self, sentences: Sentences, speaker: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Frame-level units of `sentences` and each word's [first, end) frame.

        Silence surrounds the utterance and follows every sentence; a word may be followed by
        a short pause; a silence run separates two words that would share a unit after dedup.
        """
        words = [word for sentence in sentences for word in sentence]
        pieces = self._noisy([self.pronunciation(word, speaker) for word in words], rng)
        pauses = rng.random(len(words)) < self.config.pause_probability
        pauses[np.cumsum([len(sentence) for sentence in sentences]) - 1] = True
        runs, run_spans = [-1], []
        for piece, pause in zip(pieces, pauses, strict=True):
            if runs[-1] == piece[0]:
                runs.append(-1)
            run_spans.append((len(runs), len(runs) + len(piece)))
            runs.extend(piece.tolist())
            if pause:
                runs.append(-1)
        runs = np.asarray(runs)
        silent = runs < 0
        runs[silent] = rng.choice(self.silence, size=int(silent.sum()))
        durations = 1 + rng.binomial(3, self.rates[speaker], size=runs.size)
        offsets = np.concatenate([[0], np.cumsum(durations)])
        frame_spans = [(int(offsets[a]), int(offsets[b])) for a, b in run_spans]
        return np.repeat(runs, durations), frame_spans

    def _noisy(self, pieces: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """`pieces` with each run replaced by a random speech unit with prob `unit_noise`."""
        flat = np.concatenate(pieces)
        hit = rng.random(flat.size) < self.config.unit_noise
        flat[hit] = rng.choice(self.pool, size=int(hit.sum()))
        return np.split(flat, np.cumsum([len(piece) for piece in pieces])[:-1])


def _base_renderings(rng: np.random.Generator, pool: np.ndarray) -> dict[str, np.ndarray]:
    """Each phone as 1-2 (consonant) or 2-3 (vowel) units, distinct while the pool lasts."""
    phones = CONSONANTS + VOWELS
    lengths = [int(rng.integers(1, 3) if p in CONSONANTS else rng.integers(2, 4)) for p in phones]
    units = np.resize(rng.permutation(pool), sum(lengths))
    return dict(zip(phones, np.split(units, np.cumsum(lengths)[:-1]), strict=True))


def _vary(
    rng: np.random.Generator, base: dict[str, np.ndarray], pool: np.ndarray, variation: float
) -> dict[str, np.ndarray]:
    """A speaker's renderings: each unit of `base` swapped for a random one with prob
    `variation`."""
    speaker = {}
    for phone, units in base.items():
        changed = rng.random(units.size) < variation
        speaker[phone] = np.where(changed, rng.choice(pool, size=units.size), units)
    return speaker


def _longest_cover(segment: list[int], words: dict[int, set[tuple[int, ...]]]) -> int:
    """Most units of `segment` covered by non-overlapping word pronunciations (dynamic program)."""
    best = [0] * (len(segment) + 1)
    for start in range(len(segment)):
        best[start + 1] = max(best[start + 1], best[start])
        for spoken in words.get(segment[start], ()):
            end = start + len(spoken)
            if tuple(segment[start:end]) == spoken:
                best[end] = max(best[end], best[start] + len(spoken))
    return best[-1]
