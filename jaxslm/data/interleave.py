"""SIMS-style word-level interleaving of speech units and text (docs/reference.md section 3).

Each utterance's words are split into spoken and written ones (`choose_speech_words`), runs of
same-modality words are merged, and the sequence becomes `<speech>` units / `<text>` text with
a marker at the start and at every switch (`build_interleaved`). slamkit decides once during
preprocessing; here the choice is re-drawn every epoch from (seed, epoch, record), or frozen.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jaxslm.data.records import Utterance, Word
from jaxslm.errors import JaxslmError
from jaxslm.vocab import MARKER, SPEECH, TEXT, SpeechVocab

METHODS = ("poisson", "span", "random")
LAST_SPANS = ("full", "cut")  # slamkit's rule; cut at the target (see `_poisson_spans`)
MAX_DRAWS = 10_000

EncodeText = Callable[[str], list[int]]


def record_rng(seed: int, epoch: int, record: int) -> random.Random:
    """The generator that decides one record's modalities in one epoch (Python's Mersenne
    Twister seeded from the three numbers: cheap to create, identical in every process)."""
    return random.Random(f"{seed}/{epoch}/{record}")


def choose_speech_words(
    num_words: int,
    rng: random.Random,
    method: str = "poisson",
    eta: float = 0.3,
    poisson_lambda: float = 10.0,
    last_span: str = "full",
) -> np.ndarray:
    """Which of `num_words` words are spoken: bool [num_words], True = speech.

    `poisson`: SIMS spans (`_poisson_spans`; `last_span` "full" counts the last span whole as
    slamkit does, "cut" stops it at the target). `span`: `_renewed_spans`, with `eta` the
    per-word start probability and `poisson_lambda` the span length in words (slamkit's
    `interleave_prob` and `interleave_span` drive both methods). `random`: each
    word is speech with probability 0.5. The options are checked as `InterleaveConfig` checks
    them.
    """
    rule = InterleaveConfig(method, eta, poisson_lambda, last_span=last_span)
    return np.asarray(speech_flags(num_words, rng, rule), dtype=bool)


def speech_flags(num_words: int, rng: random.Random, config: InterleaveConfig) -> list[bool]:
    """`choose_speech_words` under `config`, as a plain list (what the pipeline uses, without
    numpy calls)."""
    if config.method == "poisson":
        cut_last = config.last_span == "cut"
        return _poisson_spans(num_words, rng, config.eta, config.poisson_lambda, cut_last)
    if config.method == "span":
        return _renewed_spans(num_words, rng, config.eta, int(config.poisson_lambda))
    return [rng.random() < 0.5 for _ in range(num_words)]


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise JaxslmError(f"interleave method {method!r} is not one of {METHODS}")


def _poisson_spans(
    num_words: int, rng: random.Random, eta: float, lam: float, cut_last: bool
) -> list[bool]:
    """slamkit's rule (`select_spans_poisson` in slamkit/tokeniser/interleaving_tokeniser.py):
    add spans [start, min(start + length, n)), start drawn among the eligible words and
    length ~ Poisson(lam), until ceil(eta n) words are spoken.

    A span that overlaps a spoken word is rejected (`_fitting_span`). An accepted span is
    marked, counted and makes its words and the word after it ineligible as starts. slamkit
    counts the last span in full, overshooting the target (with eta 0.3: 0.72 of the words of
    5-word utterances, 0.50 at 20 words, 0.35 at 100); `cut_last` cuts it at the target
    instead, so the spoken fraction is eta. A zero-length span is accepted, adds nothing and
    makes just its start ineligible, so every acceptance shrinks the eligible set: at most n
    spans.
    """
    target = math.ceil(eta * num_words)
    spoken = [False] * num_words
    eligible = list(range(num_words))
    cdf = _poisson_cdf(lam)
    count = 0
    while count < target and eligible:
        span = _fitting_span(spoken, eligible, rng, cdf)
        if span is None:
            break
        start, end = span
        if cut_last:
            end = min(end, start + target - count)
        spoken[start:end] = [True] * (end - start)
        count += end - start
        eligible = [i for i in eligible if i < start or i > end]
    return spoken


def _fitting_span(
    spoken: list[bool], starts: list[int], rng: random.Random, cdf: tuple[float, ...]
) -> tuple[int, int] | None:
    """The first of up to MAX_DRAWS (start, length) draws that overlaps no spoken word.

    None (stop short of the target; slamkit draws on forever) only when all of them overlap.
    Eligible starts are never spoken, so a draw of length 0 or 1 always fits: with lam = 10 a
    draw fits with probability >= 11 exp(-10) ~ 5e-4 in every state, and the cap matters only
    for a lam much larger than the utterance, where fitting spans become vanishingly rare
    (measured with lam = 10: at most ~1,600 draws per span over 200k utterances of 1-60 words).
    """
    size = len(spoken)
    for _ in range(MAX_DRAWS):
        start = starts[int(rng.random() * len(starts))]
        end = min(start + bisect_right(cdf, rng.random()), size)
        if True not in spoken[start:end]:
            return start, end
    return None


@functools.lru_cache(maxsize=16)
def _poisson_cdf(lam: float) -> tuple[float, ...]:
    """Cumulative Poisson(lam) probabilities of 0, 1, ... up to far in the upper tail, so that
    `bisect_right(cdf, u)` of a uniform u is a Poisson draw (inverse transform)."""
    if lam <= 0:
        return (1.0,)
    top = int(lam + 12 * math.sqrt(lam) + 30)
    pmf = [math.exp(k * math.log(lam) - lam - math.lgamma(k + 1)) for k in range(top + 1)]
    cdf = list(itertools.accumulate(pmf))
    return tuple(value / cdf[-1] for value in cdf)


def _renewed_spans(num_words: int, rng: random.Random, prob: float, words: int) -> list[bool]:
    """slamkit's `span` rule: one uniform draw per word, in order; a draw below `prob` starts
    (or renews) a speech span covering that word and the next `words - 1`.

    So word i is speech iff a draw succeeded at one of words i - words + 1 .. i; away from the
    start the spoken fraction is 1 - (1 - prob) ** words (0.30 for 0.035 and 10; 0.97 for
    slamkit's configured 0.3 and 10)
    """
    spoken = [False] * num_words
    for start in range(num_words):
        if rng.random() < prob:
            stop = min(start + words, num_words)
            spoken[start:stop] = [True] * (stop - start)
    return spoken


def build_interleaved(
    utterance: Utterance,
    speech_words: np.ndarray,
    encode_text: EncodeText,
    vocab: SpeechVocab,
) -> tuple[np.ndarray, np.ndarray]:
    """(token ids int32, modality int8) of one utterance, without BOS.

    Runs of same-modality words are merged; each run starts with its marker (`<speech>` or
    `<text>`), so markers appear at the start and at every switch only. A text run is
    `encode_text` of its words joined with ''. A speech run covering [start of its first word,
    end of its last word] is the units whose end time t satisfies start <= t <= end (slamkit's
    bisect_left / bisect_right on unit end times).
    """
    words = utterance.words
    if not words:
        raise JaxslmError(f"utterance {utterance.id!r} has no word alignments to interleave")
    speech_words = np.asarray(speech_words, dtype=bool)
    if speech_words.shape != (len(words),):
        raise JaxslmError(
            f"utterance {utterance.id!r}: {speech_words.size} modality flags for {len(words)} words"
        )
    end_times = utterance.unit_end_times().tolist()
    pieces = []
    for first, stop in _runs(speech_words):
        if speech_words[first]:
            pieces.append(_speech_run(utterance, end_times, first, stop, vocab))
        else:
            pieces.append(_text_run(words[first:stop], encode_text, vocab))
    ids, modality = zip(*pieces, strict=True)
    return np.concatenate(ids).astype(np.int32), np.concatenate(modality).astype(np.int8)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[first, stop) of every maximal run of equal flags."""
    switches = np.flatnonzero(flags[1:] != flags[:-1]) + 1
    bounds = [0, *switches.tolist(), flags.size]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _speech_run(
    utterance: Utterance, end_times: list[float], first: int, stop: int, vocab: SpeechVocab
) -> tuple[np.ndarray, np.ndarray]:
    lo = bisect_left(end_times, utterance.words[first].start)
    hi = bisect_right(end_times, utterance.words[stop - 1].end)
    units = vocab.units_to_ids(np.asarray(utterance.units)[lo:hi])
    return _with_marker(vocab.speech_marker_id, units, SPEECH)


def _text_run(
    words: tuple[Word, ...], encode_text: EncodeText, vocab: SpeechVocab
) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(encode_text("".join(word.text for word in words)), dtype=np.int32)
    return _with_marker(vocab.text_marker_id, ids, TEXT)


def _with_marker(marker: int, ids: np.ndarray, modality: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.concatenate([[marker], ids]).astype(np.int32)
    codes = np.full(tokens.size, modality, dtype=np.int8)
    codes[0] = MARKER
    return tokens, codes


@dataclass(frozen=True)
class InterleaveConfig:
    """How words are split between speech and text.

    `eta` and `poisson_lambda` are slamkit's `interleave_prob` and `interleave_span`: the
    spoken-word target and the mean span length for `poisson`; the per-word probability of
    starting a span and the span length in words for `span`.
    `frozen`: decide once per record (as slamkit's preprocessing does) instead of re-drawing
    every epoch; both are deterministic given `seed`. `last_span`: "full" counts the last
    Poisson span whole, as slamkit does (the spoken share overshoots eta, see `_poisson_spans`);
    "cut" stops it at the target so that eta of the words are spoken.
    """

    method: str = "poisson"
    eta: float = 0.3
    poisson_lambda: float = 10.0
    seed: int = 0
    frozen: bool = False
    last_span: str = "full"

    def __post_init__(self) -> None:
        _check_method(self.method)
        if self.last_span not in LAST_SPANS:
            raise JaxslmError(f"interleave last_span {self.last_span!r} is not one of {LAST_SPANS}")
        if not 0.0 <= self.eta <= 1.0:
            raise JaxslmError(f"interleave eta {self.eta} must lie in [0, 1]")
        if self.poisson_lambda < 0:
            raise JaxslmError(f"interleave poisson_lambda {self.poisson_lambda} must be >= 0")
        if self.method == "span" and not (
            self.poisson_lambda >= 1 and float(self.poisson_lambda).is_integer()
        ):
            raise JaxslmError(
                f"interleave method 'span' takes poisson_lambda {self.poisson_lambda} as its "
                "span length in words: it must be a whole number >= 1"
            )


def interleave(
    utterance: Utterance,
    record_index: int,
    epoch: int,
    config: InterleaveConfig,
    encode_text: EncodeText,
    vocab: SpeechVocab,
) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, modality) of `utterance` as record `record_index` in `epoch`, without BOS."""
    speech_words = record_flags(config, len(utterance.words), record_index, epoch)
    return build_interleaved(utterance, np.asarray(speech_words, bool), encode_text, vocab)


def record_flags(config: InterleaveConfig, num_words: int, record: int, epoch: int) -> list[bool]:
    """Spoken flags of record `record`'s words in `epoch` under `config`."""
    rng = record_rng(config.seed, 0 if config.frozen else epoch, record)
    return speech_flags(num_words, rng, config)
