"""Corpus builds from slamkit-format files: good records round-trip, bad ones are counted by
reason, and --strict names the file, line and field. The built-in corpus's eval sets are
regenerated when missing or stale."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from processes import kill_once_writing

from jaxslm.data.build import main
from jaxslm.data.corpus import example_to_document, example_to_utterance, open_corpus
from jaxslm.data.pipeline import PipelineConfig, make_pipeline
from jaxslm.data.synthetic import SyntheticConfig
from jaxslm.data.synthetic_corpus import build_synthetic, ensure_eval_sets
from jaxslm.data.synthetic_eval import EVAL_TASKS
from jaxslm.errors import JaxslmError
from jaxslm.vocab import SpeechVocab

GOOD = [
    {"file_name": "a/one.wav", "units": [3, 7, 3, 9], "duration": [2, 1, 3, 2]},
    {
        "file_name": "a/two.wav",
        "units": [1, 2],
        "duration": [5, 5],
        "aligned_text": [
            {"word": " hi", "start": 0.0, "end": 0.2},
            {"word": " yo", "start": 0.2, "end": 0.4},
        ],
    },
    {"file_name": "b/three.flac", "units": [4], "duration": [10]},
]
BAD = [  # one line per reason the builder must catch (alignments below)
    {"file_name": "bad1.wav", "units": [3, 700], "duration": [1, 1]},
    {"file_name": "bad2.wav", "units": [3, 4], "duration": [1]},
    {"file_name": "bad3.wav", "units": [], "duration": []},
    {"file_name": "bad4.wav", "units": [1, 2], "duration": [1, 1]},
    {"file_name": "bad5.wav", "units": [1, 2], "duration": [2, 2]},
    {"units": [1], "duration": [1]},
    {"file_name": "bad6.wav", "units": [1], "duration": [1], "speaker": 7},
]
ALIGNMENTS = {
    "a/one.wav": [
        {"word": "the", "start": 0.0, "end": 0.12},
        {"word": "cat", "start": 0.12, "end": 0.32},
    ],
    "bad4": [{"word": "x", "start": 0.0, "end": 0.04}, {"word": "y", "start": 0.04, "end": 0.5}],
    "bad5.wav": [{"word": "x", "start": 0.1, "end": 0.16}, {"word": "y", "start": 0.0, "end": 0.1}],
}


@pytest.fixture
def slamkit_files(tmp_path):
    units = tmp_path / "features.jsonl"
    lines = [json.dumps(r) for r in GOOD] + [json.dumps(r) for r in BAD] + ["{not json"]
    units.write_text("\n".join(lines) + "\n")
    alignments = tmp_path / "align.json"
    alignments.write_text(json.dumps(ALIGNMENTS))
    text = tmp_path / "books.txt"
    text.write_text("first document here\n\nsecond one\n")
    jsonl = tmp_path / "web.jsonl"
    jsonl.write_text('{"text": "third"}\n{"no_text": 1}\n{"text": 5}\n')
    return units, alignments, text, jsonl


def test_slamkit_files_build_and_bad_records_are_counted(slamkit_files, tmp_path, capsys):
    units, alignments, text, jsonl = slamkit_files
    out = tmp_path / "corpus"
    argv = [
        "--units",
        str(units),
        "--alignments",
        str(alignments),
        "--text",
        str(text),
        str(jsonl),
        "--num-units",
        "500",
        "--validation-fraction",
        "0",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "skipped 10 records" in summary
    # a word problem names the alignment entry the words came from, beside the units line
    assert (
        f"words: times go backwards: word 1 ('y') (the words of {alignments} entry 'bad5.wav')"
        in summary
    )
    corpus = open_corpus(out)
    assert corpus.metadata["skipped"] == {
        "units: out of range": 1,
        "durations: length mismatch": 1,
        "units: empty utterance": 1,
        "words: past the audio": 1,
        "words: times go backwards": 1,
        "format: not a unit record": 1,
        "format: not JSON": 1,
        "format: not a text record": 1,
        "text: not a string": 1,
        "speaker: not a string": 1,
    }
    source = corpus.source("speech", "train")
    utterances = {
        u.id: u for u in (example_to_utterance(source[i], 0.04) for i in range(len(source)))
    }
    assert set(utterances) == {r["file_name"] for r in GOOD}
    one = utterances["a/one.wav"]
    np.testing.assert_array_equal(one.units, [3, 7, 3, 9])
    np.testing.assert_array_equal(one.durations, [2, 1, 3, 2])
    assert [w.text for w in one.words] == [" the", " cat"] and one.transcript == " the cat"
    assert [w.text for w in utterances["a/two.wav"].words] == [" hi", " yo"]
    assert utterances["b/three.flac"].words == ()
    documents = corpus.source("text", "train")
    texts = sorted(example_to_document(documents[i]).text for i in range(len(documents)))
    assert texts == ["first document here", "second one", "third"]
    assert ensure_eval_sets(out) is None


def test_strict_stops_at_the_first_bad_record(slamkit_files, tmp_path, capsys):
    units, alignments, _, _ = slamkit_files
    out = tmp_path / "corpus"
    argv = ["--units", str(units), "--alignments", str(alignments), "--strict", "--out", str(out)]
    assert main(argv) == 2
    message = capsys.readouterr().err
    assert f"{units}:4: units: out of range: values 3..700 outside [0, 500)" in message
    assert not out.exists() and not list(tmp_path.glob(".corpus*"))


def test_missing_input_file(tmp_path, capsys):
    assert main(["--units", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "c")]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def built_toy(tmp_path_factory):
    config = SyntheticConfig(num_utterances=30, num_text_documents=30, num_validation=4)
    return build_synthetic(tmp_path_factory.mktemp("built") / "toy", config)


@pytest.fixture
def toy(built_toy, tmp_path):
    """A fresh copy of the built-in corpus, with its eval files' contents."""
    corpus = shutil.copytree(built_toy, tmp_path / "toy")
    assert sorted(p.name for p in (corpus / "eval").iterdir()) == sorted(
        f"{task}.jsonl" for task in EVAL_TASKS
    )
    return corpus, _contents(corpus / "eval")


def _contents(directory):
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def test_missing_eval_files_come_back_identical(toy):
    corpus, contents = toy
    eval_dir = corpus / "eval"
    kept = (eval_dir / "swuggy.jsonl").stat().st_ino
    (eval_dir / "tstorycloze.jsonl").unlink()
    assert ensure_eval_sets(corpus) == eval_dir
    assert _contents(eval_dir) == contents and (eval_dir / "swuggy.jsonl").stat().st_ino == kept
    shutil.rmtree(eval_dir)
    assert ensure_eval_sets(corpus) == eval_dir and _contents(eval_dir) == contents
    assert not list(corpus.glob(".eval*"))


def test_eval_files_of_older_code_are_replaced(toy):
    corpus, contents = toy
    metadata = json.loads((corpus / "corpus.json").read_text())
    old = {key: value for key, value in metadata.items() if key != "eval_sets"}
    (corpus / "corpus.json").write_text(json.dumps(old))
    (corpus / "eval" / "tstorycloze.jsonl").write_text('{"file_name": "0_correct.txt"}\n')
    (corpus / "eval" / "cm_storycloze.jsonl").unlink()
    ensure_eval_sets(corpus)
    assert _contents(corpus / "eval") == contents
    assert open_corpus(corpus).metadata == metadata


def _build(tmp_path, lines: list[str], *extra: str, name: str = "units.jsonl") -> list[str]:
    """Arguments that build a corpus at tmp_path/corpus from unit lines (all in train)."""
    units = tmp_path / name
    units.write_text("\n".join(lines) + "\n")
    return [
        "--units",
        str(units),
        "--validation-fraction",
        "0",
        *extra,
        "--out",
        str(tmp_path / "corpus"),
    ]


def _stored(out) -> dict[str, tuple[list[int], list[int]]]:
    source = open_corpus(out).source("speech", "train")
    utterances = (example_to_utterance(source[i], 0.04) for i in range(len(source)))
    return {u.id: (u.units.tolist(), u.durations.tolist()) for u in utterances}


def test_units_and_durations_are_checked_before_any_cast(tmp_path, capsys):
    """Nothing wraps or is truncated: values must be whole numbers in range as written."""
    records = {
        "wraps.wav": ([1, 4294967301, 7], [1, 1, 2]),  # 2**32 + 5: int32 would store 5
        "huge.wav": ([1, 2**70], [1, 1]),
        "float.wav": ([1, 1e30], [1, 1]),
        "fraction.wav": ([1, 7.9], [1, 2]),
        "boolean.wav": ([True, 2], [1, 1]),
        "text.wav": (["3", 2], [1, 1]),
        "nan.wav": ([1, 2], [1, float("nan")]),
        "long.wav": ([1, 2], [1, 4294967297]),
        "negative.wav": ([1, 2], [1, -(2**64)]),
        "whole.wav": ([1, 7.0], [1, 2.0]),  # whole floats are the integers they spell
        "good.wav": ([499, 0], [2147483647, 1]),
    }
    lines = [
        json.dumps({"file_name": name, "units": units, "duration": durations})
        for name, (units, durations) in records.items()
    ]
    assert main(_build(tmp_path, lines)) == 0
    summary = capsys.readouterr().out
    assert _stored(tmp_path / "corpus") == {
        "whole.wav": ([1, 7], [1, 2]),
        "good.wav": ([499, 0], [2147483647, 1]),
    }
    expected = {
        "units: out of range": 3,
        "units: not integers": 3,
        "durations: not integers": 1,
        "durations: too large": 1,
        "durations: not positive": 1,
    }
    assert open_corpus(tmp_path / "corpus").metadata["skipped"] == expected
    assert "skipped 9 records" in summary


def test_malformed_lines_and_alignments_are_skipped_and_counted(tmp_path, capsys):
    good = {"units": [1, 2], "duration": [5, 5]}
    lines = [json.dumps({"file_name": f"{name}.wav", **good}) for name in ("a", "b", "c", "d")]
    lines += [
        json.dumps({"file_name": "nan.wav", **good, "aligned_text": [["x", float("nan"), 0.1]]}),
        json.dumps({"file_name": "inf.wav", **good, "aligned_text": [["x", 0, float("inf")]]}),
        json.dumps({"file_name": "str.wav", **good, "aligned_text": "hello"}),
        json.dumps({"file_name": "big.wav", **good, "aligned_text": [["x", 0, 10**400]]}),
        json.dumps({"file_name": "ok.wav", **good, "aligned_text": [["x", 0, 0.1]]}),
        json.dumps({"file_name": None, **good}),
    ]
    units = tmp_path / "units.jsonl"
    units.write_bytes(("\n".join(lines) + "\n").encode() + b'{"file_name": "caf\xe9.wav"}\n')
    alignments = tmp_path / "align.json"
    alignments.write_text(
        json.dumps(
            {
                "a.wav": [{"start": 0.0, "end": 0.1}],  # no word
                "b.wav": "hello world",
                "c.wav": [{"word": "x", "start": "zero", "end": 0.1}],
                "d.wav": [{"word": "x", "start": 0.0, "end": 0.1}],
            }
        )
    )
    text = tmp_path / "books.txt"
    text.write_bytes(b"first\ncaf\xe9 latin-1\nthird\n")
    argv = ["--units", str(units), "--alignments", str(alignments), "--text", str(text)]
    assert main([*argv, "--validation-fraction", "0", "--out", str(tmp_path / "corpus")]) == 0
    corpus = open_corpus(tmp_path / "corpus")
    assert sorted(_stored(tmp_path / "corpus")) == ["d.wav", "ok.wav"]
    assert corpus.metadata["skipped"] == {
        "words: malformed": 5,
        "words: not finite": 2,
        "file_name: not a name": 1,
        "format: not UTF-8": 2,
    }
    documents = corpus.source("text", "train")
    assert sorted(example_to_document(documents[i]).text for i in range(2)) == ["first", "third"]
    assert "units.jsonl:11: format: not UTF-8" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--frame-seconds", "0"),
        ("--frame-seconds", "-0.04"),
        ("--frame-seconds", "nan"),
        ("--validation-fraction", "1"),
        ("--validation-fraction", "2"),
        ("--validation-fraction", "-0.1"),
        ("--num-units", "0"),
    ],
)
def test_impossible_settings_are_refused(tmp_path, capsys, flag, value):
    line = json.dumps({"file_name": "a.wav", "units": [1], "duration": [1]})
    argv = _build(tmp_path, [line])
    assert main([*argv, flag, value]) == 2
    message = capsys.readouterr().err
    assert message.startswith(f"error: {flag} ") and message.count("\n") == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "units.jsonl"]


def test_an_empty_units_file_is_named(tmp_path, capsys):
    assert main(_build(tmp_path, [""])) == 2
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path / 'units.jsonl'}: no records at all (empty or blank lines only)\n"
    )


def test_a_file_of_bad_records_says_why(tmp_path, capsys):
    lines = [json.dumps({"file_name": "a.wav", "units": [900], "duration": [1]}), "{oops"]
    assert main(_build(tmp_path, lines)) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "no valid records, all 2 were skipped" in message
    assert "1 units: out of range" in message and "1 format: not JSON" in message
    assert "units.jsonl:1: units: out of range" in message


def test_an_unwritable_output_is_refused_before_reading(tmp_path, capsys):
    line = json.dumps({"file_name": "a.wav", "units": [1], "duration": [1]})
    argv = _build(tmp_path, [line])
    argv[-1] = str(tmp_path / "units.jsonl" / "corpus")
    assert main(argv) == 2
    assert "units.jsonl is a file; choose another output path" in capsys.readouterr().err


STALLED_BUILD = """
import sys, time
from jaxslm.data import build, corpus

def stall(*args, **kwargs):
    print("writing", flush=True)
    time.sleep(600)

corpus.save_columns = stall  # the build stops inside its staging folder until killed
build.main(sys.argv[1:])
"""


def test_a_killed_build_leaves_a_folder_the_next_build_removes(tmp_path, capsys):
    line = json.dumps({"file_name": "a.wav", "units": [1, 2], "duration": [1, 1]})
    argv = _build(tmp_path, [line])
    kill_once_writing(STALLED_BUILD, argv)
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".corpus.partial-")]
    assert len(stale) == 1 and (stale[0] / "speech").is_dir()
    assert main(argv) == 0
    assert f"removed stale staging folder {stale[0]}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "units.jsonl"]
    assert _stored(tmp_path / "corpus") == {"a.wav": ([1, 2], [1, 1])}


def test_words_may_end_up_to_a_frame_and_50_ms_past_the_units(tmp_path, capsys):
    """Encoders stop short of the audio's end, where aligners put the last word's end: a word
    ending up to `end_slack` past the last unit is kept, further is a wrong alignment."""
    units = {"units": [1, 2], "duration": [5, 5]}  # 0.4 s at 0.04 s a frame
    lines = [
        json.dumps({"file_name": f"{name}.wav", **units, "aligned_text": [["x", 0.1, end]]})
        for name, end in (("inside", 0.38), ("just_past", 0.48), ("far_past", 0.6))
    ]
    assert main(_build(tmp_path, lines)) == 0
    assert sorted(_stored(tmp_path / "corpus")) == ["inside.wav", "just_past.wav"]
    assert "ends at 0.600s, the units at 0.400s" in capsys.readouterr().out
    assert open_corpus(tmp_path / "corpus").metadata["skipped"] == {"words: past the audio": 1}


def test_text_files_sharing_a_name_keep_every_document(tmp_path, capsys):
    (tmp_path / "en").mkdir()
    (tmp_path / "fr").mkdir()
    (tmp_path / "en/part.txt").write_text("one\ntwo\n")
    (tmp_path / "fr/part.txt").write_text("un\ndeux\n")
    texts = [str(tmp_path / "en/part.txt"), str(tmp_path / "fr/part.txt")]
    out = tmp_path / "corpus"
    argv = ["--text", *texts, "--validation-fraction", "0", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr()
    documents = open_corpus(out).source("text", "train")
    stored = sorted(example_to_document(documents[i]).text for i in range(len(documents)))
    assert stored == ["deux", "one", "two", "un"]
    assert main(["--text", texts[0], texts[0], "--out", str(tmp_path / "again")]) == 2
    assert f"{texts[0]}: given twice" in capsys.readouterr().err


def test_unaligned_utterances_are_noted_and_never_interleaved(tmp_path, capsys):
    """Alignments that match no file_name leave utterances without words: the build says so,
    and a pipeline that would interleave them refuses with the fix instead of waiting forever."""
    lines = [
        json.dumps({"file_name": f"u{i}.wav", "units": [1, 2], "duration": [5, 5]})
        for i in range(3)
    ]
    alignments = tmp_path / "align.json"
    alignments.write_text(json.dumps({"other.wav": [{"word": "x", "start": 0, "end": 0.1}]}))
    assert main(_build(tmp_path, lines, "--alignments", str(alignments))) == 0
    note = capsys.readouterr().out
    assert f"note: 3 utterances (first: u0.wav) have no entry in {alignments}" in note
    corpus = open_corpus(tmp_path / "corpus")
    vocab = SpeechVocab("interleaved", 100, 500)
    with pytest.raises(JaxslmError, match=r"no text records.*--text FILES.*stream_weights="):
        make_pipeline(corpus, None, vocab, PipelineConfig())
    config = PipelineConfig(stream_weights=(0.0, 0.5, 0.5))
    with pytest.raises(JaxslmError) as refused:
        make_pipeline(corpus, None, vocab, config)
    assert "no utterance with word alignments" in str(refused.value)
    assert "--alignments" in str(refused.value) and "[0.0, 0, 0.5]" in str(refused.value)
    speech = PipelineConfig(stream_weights=(0, 0, 1))
    assert next(iter(make_pipeline(corpus, None, vocab, speech)))
    held_out = dataclasses.replace(speech, split="validation")
    with pytest.raises(JaxslmError, match="no 'validation' split.*--validation-fraction above 0"):
        make_pipeline(corpus, None, vocab, held_out)


def test_the_fingerprint_follows_the_records_and_tokenizer_not_the_path_or_eval_sets(toy, tmp_path):
    """What a resumed run compares: a copy elsewhere, or eval sets made again, change nothing;
    another tokenizer, other records or other counts do."""
    corpus, _ = toy
    first = open_corpus(corpus).fingerprint()
    assert open_corpus(shutil.copytree(corpus, tmp_path / "moved")).fingerprint() == first
    shutil.rmtree(corpus / "eval")
    metadata = json.loads((corpus / "corpus.json").read_text())
    del metadata["eval_sets"]
    (corpus / "corpus.json").write_text(json.dumps(metadata))
    ensure_eval_sets(corpus)
    assert open_corpus(corpus).fingerprint() == first
    with (corpus / "tokenizer" / "tokenizer.model").open("ab") as tokenizer:
        tokenizer.write(b"\0")
    changed = open_corpus(corpus).fingerprint()
    assert [k for k in first if first[k] != changed[k]] == ["tokenizer"]
    other = build_synthetic(
        tmp_path / "other",
        SyntheticConfig(num_utterances=31, num_text_documents=30, num_validation=4),
    )
    rebuilt = open_corpus(other).fingerprint()
    assert rebuilt["records"] != first["records"] and rebuilt["metadata"] != first["metadata"]
