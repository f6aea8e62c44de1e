"""Word-level speech/text interleaving (docs/reference.md section 3) on synthetic utterances."""

import bisect
import math
import random

import numpy as np
import pytest
from references import plain_poisson_rule, poisson_spans, runs, slamkit_spans

from jaxslm.data.interleave import (
    InterleaveConfig,
    _poisson_cdf,
    build_interleaved,
    choose_speech_words,
    interleave,
    record_rng,
)
from jaxslm.data.records import Utterance, Word
from jaxslm.errors import JaxslmError
from jaxslm.vocab import SpeechVocab

VOCAB = SpeechVocab("interleaved", text_size=300, num_units=50)
CHARS = " abcdefghijklmnopqrstuvwxyz"
FRAME = 0.04


def encode_text(text: str) -> list[int]:
    """One id per character."""
    return [CHARS.index(char) for char in text]


def decode_text(ids) -> str:
    return "".join(CHARS[i] for i in ids)


def make_utterance(rng: np.random.Generator, num_words: int, uid: str = "utt") -> Utterance:
    """Random units; each word covers 1-4 whole units, with 0-2 silence units between words."""
    units, durations, spans = [], [], []
    for _ in range(num_words):
        units.extend(rng.integers(0, 50, size=int(rng.integers(0, 3))).tolist())
        first = len(units)
        units.extend(rng.integers(0, 50, size=int(rng.integers(1, 5))).tolist())
        spans.append((first, len(units)))
    durations = rng.integers(1, 6, size=len(units))
    ends = np.cumsum(durations) * FRAME
    words = tuple(
        Word(
            " " + "".join(rng.choice(list(CHARS[1:]), size=int(rng.integers(1, 7)))),
            float(ends[first - 1]) if first else 0.0,
            float(ends[stop - 1]),
        )
        for first, stop in spans
    )
    return Utterance(uid, np.asarray(units), durations, FRAME, words)


def spoken_stats(masks) -> tuple[float, float]:
    """(fraction of spoken words, mean length of maximal spoken runs)."""
    words = sum(len(mask) for mask in masks)
    lengths = [stop - first for mask in masks for flag, first, stop in runs(mask) if flag]
    return sum(lengths) / words, float(np.mean(lengths))


def test_poisson_with_the_last_span_cut_speaks_eta_of_the_words():
    """`last_span="cut"`: 0.3 of the words, spans as long as the rule draws them."""
    sizes = np.random.default_rng(0).integers(20, 61, size=3000)
    masks = [
        choose_speech_words(int(n), record_rng(0, 0, i), last_span="cut")
        for i, n in enumerate(sizes)
    ]
    targets = [math.ceil(0.3 * n) for n in sizes]
    assert all(mask.sum() <= target for mask, target in zip(masks, targets, strict=True))
    fraction, mean_run = spoken_stats([m.tolist() for m in masks])
    assert abs(fraction - 0.3) < 0.03
    # Runs average ~10 words (Poisson mean), shortened where a span hits the utterance end or
    # the target; never longer than the longest plausible Poisson(10) draw.
    assert 5 < mean_run < 10.5


def test_slamkit_poisson_matches_the_plain_rule():
    sizes = np.random.default_rng(0).integers(20, 61, size=3000)
    ours = [choose_speech_words(int(n), record_rng(0, 0, i)).tolist() for i, n in enumerate(sizes)]
    rnd = random.Random(1)
    plain = [plain_poisson_rule(int(n), rnd) for n in sizes]
    (fraction, mean_run), (plain_fraction, plain_mean_run) = spoken_stats(ours), spoken_stats(plain)
    # The last span is counted in full, so with 20-60 words the spoken fraction overshoots
    # eta: ~0.42, not 0.30. Both estimates have standard error ~0.003 (runs: ~0.07).
    assert abs(fraction - plain_fraction) < 0.015 and 0.38 < fraction < 0.46
    assert abs(mean_run - plain_mean_run) < 0.4 and 7.5 < mean_run < 10
    long = [choose_speech_words(2000, record_rng(0, 0, i)).tolist() for i in range(30)]
    assert abs(spoken_stats(long)[0] - 0.3) < 0.03


def test_poisson_spans_equal_slamkits_rule_draw_for_draw():
    """Fed the same uniform draws (a start among the eligible words, then a Poisson length by
    inverse transform), the spoken words are exactly those of slamkit's rule restated in
    references.py: an accepted span's words and the word after it stop being starts."""
    cdf = _poisson_cdf(10.0)
    for record in range(300):
        words = 1 + record % 60
        rnd = record_rng(0, 0, record)
        theirs = poisson_spans(
            words,
            lambda eligible, rnd=rnd: sorted(eligible)[int(rnd.random() * len(eligible))],
            lambda rnd=rnd: bisect.bisect_right(cdf, rnd.random()),
        )
        ours = choose_speech_words(words, record_rng(0, 0, record))
        assert ours.tolist() == theirs.tolist(), record


def test_poisson_always_terminates():
    rng = record_rng(0, 0, 0)
    assert not choose_speech_words(40, rng, poisson_lambda=0.0).any()  # only empty spans
    assert choose_speech_words(0, rng).size == 0
    for record in range(20):  # spans far longer than the utterance: most draws overlap
        rng = record_rng(0, 0, record)
        spoken = choose_speech_words(50, rng, poisson_lambda=500.0)
        assert spoken.sum() >= 1 and spoken[-1]  # the first span always runs to the end
        clipped = choose_speech_words(
            50, record_rng(0, 0, record), poisson_lambda=500.0, last_span="cut"
        )
        assert 1 <= clipped.sum() <= 15  # never past the target ceil(0.3 * 50)


def segments(ids: np.ndarray, modality: np.ndarray) -> list[tuple[int, list[int], set[int]]]:
    """Split the output at markers: (marker id, following ids, their modality codes)."""
    is_marker = np.isin(ids, [VOCAB.speech_marker_id, VOCAB.text_marker_id])
    assert is_marker[0] and (modality == 2).tolist() == is_marker.tolist()
    starts = [*np.flatnonzero(is_marker).tolist(), ids.size]
    return [
        (int(ids[a]), ids[a + 1 : b].tolist(), set(modality[a + 1 : b].tolist()))
        for a, b in zip(starts[:-1], starts[1:], strict=True)
    ]


@pytest.mark.parametrize("method", ["poisson", "random", "span"])
def test_build_walks_markers_units_and_text(method):
    rng = np.random.default_rng(3)
    for record in range(40):
        utterance = make_utterance(rng, int(rng.integers(1, 40)))
        spoken = choose_speech_words(len(utterance.words), record_rng(0, 0, record), method)
        ids, modality = build_interleaved(utterance, spoken, encode_text, VOCAB)
        assert ids.dtype == np.int32 and modality.dtype == np.int8
        assert modality.tolist() == VOCAB.modality(ids).tolist()
        expected = runs(spoken.tolist())
        found = segments(ids, modality)
        assert len(found) == len(expected)  # a marker at the start, every switch, nowhere else
        ends = utterance.unit_end_times()
        for (is_speech, first, stop), (marker, body, codes) in zip(expected, found, strict=True):
            words = utterance.words[first:stop]
            if is_speech:
                start, end = words[0].start, words[-1].end
                units = [u for u, t in zip(utterance.units, ends, strict=True) if start <= t <= end]
                assert marker == VOCAB.speech_marker_id and codes == {1}
                assert body == VOCAB.units_to_ids(units).tolist()
            else:
                assert marker == VOCAB.text_marker_id and codes == {0}
                assert decode_text(body) == "".join(word.text for word in words)


def test_speech_run_takes_the_units_bracketed_by_word_times():
    words = (Word(" a", 0.0, 0.08), Word(" b", 0.08, 0.2), Word(" c", 0.2, 0.24))
    utterance = Utterance("u", np.array([7, 8, 9, 10]), np.array([1, 1, 3, 1]), 0.04, words)
    ids, _ = build_interleaved(utterance, np.array([False, True, False]), encode_text, VOCAB)
    # unit ends 0.04 0.08 0.2 0.24: the unit ending exactly at the word start is included
    speech = VOCAB.units_to_ids([8, 9]).tolist()
    text, speech_marker = VOCAB.text_marker_id, VOCAB.speech_marker_id
    assert ids.tolist() == [text, 0, 1, speech_marker, *speech, text, 0, 3]


def test_same_seed_epoch_record_is_deterministic_and_epochs_differ():
    rng = np.random.default_rng(4)
    utterances = [make_utterance(rng, 40, f"u{i}") for i in range(50)]
    config, frozen = InterleaveConfig(seed=7), InterleaveConfig(seed=7, frozen=True)

    def out(utterance, record, epoch, cfg=config):
        return interleave(utterance, record, epoch, cfg, encode_text, VOCAB)

    changed = 0
    for record, utterance in enumerate(utterances):
        first, again = out(utterance, record, 0), out(utterance, record, 0)
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
        changed += not np.array_equal(first[0], out(utterance, record, 1)[0])
        frozen_outputs = [out(utterance, record, epoch, frozen)[0] for epoch in range(3)]
        assert all(np.array_equal(frozen_outputs[0], x) for x in frozen_outputs[1:])
    assert changed >= 45


def test_random_method_speaks_half_the_words():
    fraction = np.mean([choose_speech_words(50, record_rng(1, 0, i), "random") for i in range(400)])
    assert abs(fraction - 0.5) < 0.02


def test_span_method_renews_spans_of_n_words():
    """slamkit's `span` takes the same two knobs as `poisson`: eta is the per-word start
    probability, lambda the span length in words."""
    assert choose_speech_words(30, record_rng(0, 0, 0), "span", eta=1.0).all()
    assert not choose_speech_words(30, record_rng(0, 0, 0), "span", eta=0.0).any()
    masks = [
        choose_speech_words(60, record_rng(2, 0, i), "span", eta=0.035, poisson_lambda=5)
        for i in range(500)
    ]
    for mask in masks:  # every spoken run is >= 5 words unless cut by the utterance end
        assert all(stop - first >= 5 or stop == 60 for flag, first, stop in runs(mask) if flag)
    steady = np.mean([mask[4:] for mask in masks])  # words with a full window of 5 draws
    assert abs(steady - (1 - (1 - 0.035) ** 5)) < 0.015


def test_bad_input_errors():
    with pytest.raises(JaxslmError, match="'poisson', 'span', 'random'"):
        choose_speech_words(5, record_rng(0, 0, 0), "bursty")
    with pytest.raises(JaxslmError, match="bursty"):
        InterleaveConfig(method="bursty")
    with pytest.raises(JaxslmError, match="eta"):
        InterleaveConfig(eta=1.5)
    empty = Utterance("lonely-42", np.array([1, 2]), np.array([1, 1]), FRAME)
    with pytest.raises(JaxslmError, match="lonely-42"):
        interleave(empty, 0, 0, InterleaveConfig(), encode_text, VOCAB)
    utterance = make_utterance(np.random.default_rng(0), 3)
    with pytest.raises(JaxslmError, match="2 modality flags for 3 words"):
        build_interleaved(utterance, np.array([True, False]), encode_text, VOCAB)


# Spoken share of the words with eta 0.3, lambda 10, measured with slamkit's own function
# (docs/reference.md section 3), by utterance length in words.
SLAMKIT_SPOKEN_SHARE = {5: 0.72, 10: 0.65, 20: 0.50, 40: 0.41, 60: 0.375, 100: 0.35}


def test_default_spoken_share_is_slamkits():
    for n, share in SLAMKIT_SPOKEN_SHARE.items():
        rs = np.random.RandomState(n)
        theirs = np.mean([slamkit_spans(n, rs).mean() for _ in range(1500)])
        ours = np.mean([choose_speech_words(n, record_rng(5, 0, i)).mean() for i in range(1500)])
        cut = [choose_speech_words(n, record_rng(5, 0, i), last_span="cut") for i in range(200)]
        assert abs(theirs - share) < 0.025, (n, theirs)  # the table: 2 digits, 1500 draws
        assert abs(ours - theirs) < 0.025, (n, ours, theirs)
        assert all(mask.sum() == math.ceil(0.3 * n) for mask in cut)  # the named variant


@pytest.mark.parametrize("eta, lam, share", [(0.035, 10, 1 - 0.965**10), (0.9, 2, 0.99)])
def test_span_settings_of_the_run_config_reach_the_pipeline(eta, lam, share):
    from jaxslm.config import load_config
    from jaxslm.data.interleave import speech_flags
    from jaxslm.training.setup import pipeline_config

    keys = [
        "budget.max_steps=1",
        "data.interleave_method=span",
        f"data.interleave_eta={eta}",
        f"data.interleave_lam={lam}",
    ]
    rule = pipeline_config(load_config(None, keys), "train", None).interleave
    flags = [speech_flags(60, record_rng(3, 0, i), rule)[lam:] for i in range(400)]
    assert abs(np.mean(flags) - share) < 0.02
    with pytest.raises(JaxslmError, match="data.interleave_lam"):
        load_config(None, [*keys[:3], "data.interleave_lam=2.5"])
