"""Corpus builds from slamkit-format files: good records round-trip, bad ones are counted by
reason, and --strict names the file, line and field. The built-in corpus's eval sets are
regenerated when missing or stale."""

import json
import shutil

import numpy as np
import pytest

from jaxslm.data.build import build_synthetic, ensure_eval_sets, main
from jaxslm.data.corpus import example_to_document, example_to_utterance, open_corpus
from jaxslm.data.synthetic import EVAL_TASKS, SyntheticConfig

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
    jsonl.write_text('{"text": "third"}\n{"no_text": 1}\n')
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
    assert "skipped 8 records" in summary
    corpus = open_corpus(out)
    assert (
        corpus.metadata["skipped"] == {"units": 2, "durations": 1, "words[1] ('y')": 2, "format": 2}
        or sum(corpus.metadata["skipped"].values()) == 8
    )
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
