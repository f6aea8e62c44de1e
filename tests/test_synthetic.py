"""The built-in toy language: determinism, valid records, exact word spans, eval-set pairing."""

import json
import re
from bisect import bisect_left, bisect_right
from itertools import pairwise

import numpy as np
import pytest

from jaxslm.data.records import dedup, problem_with
from jaxslm.data.synthetic import PHENOMENA, SyntheticConfig, SyntheticLanguage, write_eval_sets
from jaxslm.errors import JaxslmError

SMALL = SyntheticConfig(num_units=50, num_speakers=4, lexicon_size=120)


@pytest.fixture(scope="module")
def language():
    return SyntheticLanguage(SMALL)


def _utterance_key(utterance):
    return (
        utterance.id,
        utterance.units.tolist(),
        utterance.durations.tolist(),
        utterance.words,
        utterance.transcript,
        utterance.speaker,
    )


def _word_units(utterance):
    """Each word's units by slamkit's rule on unit end times."""
    ends = utterance.unit_end_times().tolist()
    return [
        utterance.units[bisect_left(ends, word.start) : bisect_right(ends, word.end)]
        for word in utterance.words
    ]


def test_same_seed_same_corpus_and_different_seed_different(language):
    again = SyntheticLanguage(SMALL)
    assert again.lexicon == language.lexicon
    assert [_utterance_key(u) for u in again.utterances(20)] == [
        _utterance_key(u) for u in language.utterances(20)
    ]
    assert list(again.text_documents(20)) == list(language.text_documents(20))
    other = SyntheticLanguage(SyntheticConfig(seed=1, num_units=50, lexicon_size=120))
    assert other.lexicon != language.lexicon
    assert [d.text for d in other.text_documents(5)] != [d.text for d in again.text_documents(5)]


def test_streams_are_prefix_stable(language):
    ten = [_utterance_key(u) for u in language.utterances(10)]
    assert [_utterance_key(u) for u in language.utterances(4)] == ten[:4]


def test_lexicon_words_look_like_words(language):
    assert len(language.lexicon) == SMALL.lexicon_size
    for word, phones in language.lexicon.items():
        assert 2 <= len(phones) <= 5 and "".join(phones) == word
        assert not re.search("[aeiou]{2}", word), word


@pytest.mark.parametrize("split", ["train", "validation"])
def test_utterances_are_valid_records(language, split):
    for utterance in language.utterances(30, split):
        assert problem_with(utterance, SMALL.num_units) is None
        assert utterance.units.dtype == np.int32 and utterance.durations.dtype == np.int32
        assert utterance.frame_seconds == SMALL.frame_seconds
        assert utterance.speaker in language.speakers
        assert utterance.transcript == "".join(word.text for word in utterance.words)
        for word in utterance.words:
            assert word.text.startswith(" ") and word.text[1:] in language.lexicon


def test_word_spans_recover_exactly_each_words_units():
    clean = SyntheticLanguage(SyntheticConfig(num_units=50, lexicon_size=120, unit_noise=0.0))
    for utterance in clean.utterances(30):
        for word, units in zip(utterance.words, _word_units(utterance), strict=True):
            expected = dedup(clean.pronunciation(word.text[1:], utterance.speaker))[0]
            assert units.tolist() == expected.tolist(), (utterance.id, word)


def test_word_spans_never_share_a_unit(language):
    for utterance in language.utterances(30):
        ends = utterance.unit_end_times().tolist()
        spans = [
            (bisect_left(ends, word.start), bisect_right(ends, word.end))
            for word in utterance.words
        ]
        assert all(lo < hi for lo, hi in spans)
        assert all(previous[1] <= current[0] for previous, current in pairwise(spans))


def test_splits_are_disjoint(language):
    train = list(language.utterances(200))
    validation = list(language.utterances(20, "validation"))
    assert not {u.id for u in train} & {u.id for u in validation}
    assert not {u.transcript for u in train} & {u.transcript for u in validation}
    train_texts = {d.text for d in language.text_documents(200)}
    validation_docs = list(language.text_documents(20, "validation"))
    assert len(validation_docs) == 20 and not train_texts & {d.text for d in validation_docs}


def test_text_documents_are_coherent_stories(language):
    for document in language.text_documents(30):
        sentences = document.text.removesuffix(".").split(". ")
        assert 3 <= len(sentences) <= 5
        protagonist = sentences[0].split()[2]
        assert sentences[-1].split()[2] == protagonist


def test_speakers_render_the_same_word_differently(language):
    renderings = {
        word: {tuple(language.pronunciation(word, speaker)) for speaker in language.speakers}
        for word in language.lexicon
    }
    assert any(len(variants) > 1 for variants in renderings.values())


def _read_pairs(path, separator):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) % 2 == 0
    prefix = [int(line["file_name"].split(separator)[0]) for line in lines]
    order = sorted(range(len(lines)), key=prefix.__getitem__)
    ordered = [lines[i] for i in order]
    pairs = list(zip(ordered[::2], ordered[1::2], strict=True))
    for positive, negative in pairs:
        assert (
            positive["file_name"].split(separator)[0] == negative["file_name"].split(separator)[0]
        )
    return pairs


def _check_units(line):
    assert len(line["units"]) == len(line["duration"]) > 0
    assert all(0 <= unit < SMALL.num_units for unit in line["units"])
    assert min(line["duration"]) >= 1


def test_eval_sets_pair_positives_with_real_negatives(language, tmp_path):
    paths = write_eval_sets(language, tmp_path, num_pairs=12)
    assert set(paths) == {"swuggy", "sblimp", "sstorycloze", "tstorycloze"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())

    for positive, negative in _read_pairs(paths["swuggy"], "_"):
        assert positive["file_name"].endswith("_word.wav")
        assert negative["file_name"].endswith("_nonword.wav")
        assert positive["text"] in language.lexicon and negative["text"] not in language.lexicon
        assert len(positive["text"]) == len(negative["text"])
        _check_units(positive), _check_units(negative)

    phenomena = set()
    for positive, negative in _read_pairs(paths["sblimp"], "+"):
        assert positive["file_name"].endswith("+grammatical.wav")
        assert negative["file_name"].endswith("+ungrammatical.wav")
        assert positive["phenomenon"] == negative["phenomenon"] in PHENOMENA
        assert positive["text"] != negative["text"] and positive["units"] != negative["units"]
        phenomena.add(positive["phenomenon"])
        _check_units(positive), _check_units(negative)
    assert phenomena == set(PHENOMENA)

    spoken = _read_pairs(paths["sstorycloze"], "_")
    written = _read_pairs(paths["tstorycloze"], "_")
    for (positive, negative), (correct, incorrect) in zip(spoken, written, strict=True):
        assert positive["file_name"].endswith("_correct.wav")
        assert negative["file_name"].endswith("_incorrect.wav")
        assert correct["file_name"] == positive["file_name"].replace(".wav", ".txt")
        assert incorrect["file_name"] == negative["file_name"].replace(".wav", ".txt")
        _check_units(positive), _check_units(negative)
        *prompt, good_ending = correct["text"].removesuffix(".").split(". ")
        *same_prompt, bad_ending = incorrect["text"].removesuffix(".").split(". ")
        assert prompt == same_prompt and good_ending != bad_ending
        story = " ".join(prompt).split()
        assert good_ending.split()[2] in story and bad_ending.split()[2] not in story


def test_eval_sets_are_deterministic(language, tmp_path):
    first = write_eval_sets(language, tmp_path / "a", num_pairs=6)
    second = write_eval_sets(SyntheticLanguage(SMALL), tmp_path / "b", num_pairs=6)
    for task, path in first.items():
        assert path.read_text() == second[task].read_text()


def test_bad_config_and_split_are_refused(language):
    with pytest.raises(JaxslmError, match="num_units"):
        SyntheticConfig(num_units=3)
    with pytest.raises(JaxslmError, match="unit_noise"):
        SyntheticConfig(unit_noise=1.5)
    with pytest.raises(JaxslmError, match="split"):
        language.utterances(1, "test")


def test_default_config_builds():
    language = SyntheticLanguage()
    assert len(language.lexicon) == 300 and len(language.speakers) == 8
    utterance = next(language.utterances())
    assert problem_with(utterance, 100) is None
    assert next(language.text_documents(split="validation")).text
