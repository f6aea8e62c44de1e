"""Corpus builds from slamkit-format files: good records round-trip, bad ones are counted by
reason, and --strict names the file, line and field."""

import json

import numpy as np
import pytest

from jaxslm.data.build import main
from jaxslm.data.corpus import example_to_document, example_to_utterance, open_corpus

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
