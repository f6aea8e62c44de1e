"""The built-in toy language: determinism, valid records, exact word spans, eval-set pairing."""

import json
import re
from bisect import bisect_left, bisect_right
from itertools import pairwise

import numpy as np
import pytest

from jaxslm.data.records import dedup, problem_with
from jaxslm.data.synthetic import SyntheticConfig, SyntheticLanguage
from jaxslm.data.synthetic_eval import EVAL_TASKS, PHENOMENA, write_eval_sets
from jaxslm.errors import JaxslmError

SMALL = SyntheticConfig(num_units=50, num_speakers=4, lexicon_size=120)
NUM_PAIRS = 12


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


@pytest.fixture(scope="module")
def eval_sets(language, tmp_path_factory):
    return write_eval_sets(language, tmp_path_factory.mktemp("eval"), num_pairs=NUM_PAIRS)


def _read_groups(path, separator, size=2):
    """An eval file's lines in groups of `size` sharing an integer prefix, checking that the
    file is already in slamkit's order (a stable sort by that prefix)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    prefixes = [int(line["file_name"].split(separator)[0]) for line in lines]
    assert prefixes == sorted(prefixes) and len(lines) == size * NUM_PAIRS
    groups = [tuple(lines[k : k + size]) for k in range(0, len(lines), size)]
    assert all(len(set(prefixes[k : k + size])) == 1 for k in range(0, len(lines), size))
    return groups


def _names(group, separator, *kinds):
    index = group[0]["file_name"].split(separator)[0]
    return [line["file_name"] for line in group] == [f"{index}{separator}{k}" for k in kinds]


def _check_units(line):
    assert len(line["units"]) == len(line["duration"]) > 0
    assert all(0 <= unit < SMALL.num_units for unit in line["units"])
    assert min(line["duration"]) >= 1


def _sentences(text):
    return text.removesuffix(".").split(". ")


def _check_spoken_matches_written(spoken, written):
    for speech_pair, text_pair in zip(spoken, written, strict=True):
        for speech, text in zip(speech_pair, text_pair, strict=True):
            assert text["file_name"] == speech["file_name"].replace(".wav", ".txt")
            assert text["text"].replace(".", "") == speech["text"]
            _check_units(speech)


def test_eval_sets_are_all_written(eval_sets):
    assert tuple(eval_sets) == EVAL_TASKS
    directory = eval_sets["swuggy"].parent
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{t}.jsonl" for t in EVAL_TASKS)


def test_swuggy_and_sblimp_pair_positives_with_real_negatives(language, eval_sets):
    for positive, negative in _read_groups(eval_sets["swuggy"], "_"):
        assert _names((positive, negative), "_", "word.wav", "nonword.wav")
        assert positive["text"] in language.lexicon and negative["text"] not in language.lexicon
        assert len(positive["text"]) == len(negative["text"])
        _check_units(positive), _check_units(negative)

    phenomena = set()
    for positive, negative in _read_groups(eval_sets["sblimp"], "+"):
        assert _names((positive, negative), "+", "grammatical.wav", "ungrammatical.wav")
        assert positive["phenomenon"] == negative["phenomenon"] in PHENOMENA
        assert positive["text"] != negative["text"] and positive["units"] != negative["units"]
        phenomena.add(positive["phenomenon"])
        _check_units(positive), _check_units(negative)
    assert phenomena == set(PHENOMENA)


def test_sstorycloze_ends_on_a_stranger(eval_sets):
    spoken = _read_groups(eval_sets["sstorycloze"], "_")
    written = _read_groups(eval_sets["sstorycloze_text"], "_")
    _check_spoken_matches_written(spoken, written)
    for pair in written:
        assert _names(pair, "_", "correct.txt", "incorrect.txt")
        *prompt, good_ending = _sentences(pair[0]["text"])
        *same_prompt, bad_ending = _sentences(pair[1]["text"])
        assert prompt == same_prompt and good_ending != bad_ending
        story = " ".join(prompt).split()
        assert good_ending.split()[2] in story and bad_ending.split()[2] not in story


def test_tstorycloze_ends_on_another_storys_ending(eval_sets):
    spoken = _read_groups(eval_sets["tstorycloze"], "_")
    written = _read_groups(eval_sets["tstorycloze_text"], "_")
    _check_spoken_matches_written(spoken, written)
    stories = [correct for correct, _ in _read_groups(eval_sets["sstorycloze_text"], "_")]
    assert [correct for correct, _ in written] == stories
    endings = [_sentences(story["text"])[-1] for story in stories]
    for i, (correct, incorrect) in enumerate(written):
        assert _names((correct, incorrect), "_", "correct.txt", "incorrect.txt")
        *prompt, ending = _sentences(correct["text"])
        *same_prompt, wrong = _sentences(incorrect["text"])
        assert prompt == same_prompt and wrong != ending
        assert wrong in endings[:i] + endings[i + 1 :]


def test_cm_storycloze_splits_stories_into_prompt_and_endings(eval_sets):
    written = _read_groups(eval_sets["tstorycloze_text"], "_")
    triples = _read_groups(eval_sets["cm_storycloze"], "_", size=3)
    for (mutual, correct, incorrect), (story, wrong_story) in zip(triples, written, strict=True):
        assert _names(
            (mutual, correct, incorrect), "_", "mutual.wav", "correct.wav", "incorrect.wav"
        )
        assert f"{mutual['text']} {correct['text']}" == story["text"]
        assert f"{mutual['text']} {incorrect['text']}" == wrong_story["text"]
        _check_units(mutual), _check_units(correct), _check_units(incorrect)


def test_eval_sets_are_deterministic(language, tmp_path):
    first = write_eval_sets(language, tmp_path / "a", num_pairs=6)
    second = write_eval_sets(SyntheticLanguage(SMALL), tmp_path / "b", num_pairs=6)
    for task, path in first.items():
        assert path.read_text() == second[task].read_text(), task


def test_bad_config_and_split_are_refused(language, tmp_path):
    with pytest.raises(JaxslmError, match="num_units"):
        SyntheticConfig(num_units=3)
    with pytest.raises(JaxslmError, match="unit_noise"):
        SyntheticConfig(unit_noise=1.5)
    with pytest.raises(JaxslmError, match="split"):
        language.utterances(1, "test")
    with pytest.raises(JaxslmError, match="num_pairs=1"):
        write_eval_sets(language, tmp_path, num_pairs=1)
    assert not list(tmp_path.iterdir())


def test_default_config_builds():
    language = SyntheticLanguage()
    assert len(language.lexicon) == 300 and len(language.speakers) == 8
    utterance = next(language.utterances())
    assert problem_with(utterance, 100) is None
    assert next(language.text_documents(split="validation")).text
