"""Word times are float64 from the alignment file to the span bounds, as in slamkit: on a 0.01 s
alignment grid with 0.04 s frames, every speech run takes the units slamkit's float64 rule
takes. Corpora with float32 times (older builds) are widened back to the grid when opened."""

import json
import shutil
from bisect import bisect_left, bisect_right

import numpy as np
import pytest
from tiny_tokenizers import build_tokenizer

from jaxslm.data.build import main
from jaxslm.data.columns import widen_times
from jaxslm.data.corpus import COLUMNS_DIR, example_to_utterance, open_corpus
from jaxslm.data.encode import ChunkEncoder, DocumentEncoder
from jaxslm.data.interleave import InterleaveConfig, record_flags
from jaxslm.text_tokenizer import HFTokenizer
from jaxslm.vocab import SpeechVocab

FRAME = 0.04
WORDS = ("the", "cat", "sat", "on", "mat", "dog", "ran", "park")


def grid_utterance(rng: np.random.Generator, name: str) -> tuple[dict, list[dict]]:
    """A unit line and its alignment: units of 1-3 frames of 0.04 s; word edges on the 0.01 s
    grid, often exactly at a unit's end (where float32 and float64 disagree)."""
    durations = rng.integers(1, 4, size=int(rng.integers(20, 60)))
    hundredths = 4 * int(durations.sum())
    inner = rng.choice(np.arange(1, hundredths), size=int(rng.integers(4, 12)), replace=False)
    edges = np.sort(inner)
    edges = [0, *edges.tolist(), hundredths]
    words = [
        {"word": str(rng.choice(WORDS)), "start": round(a / 100, 2), "end": round(b / 100, 2)}
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    units = rng.integers(0, 50, size=durations.size).tolist()
    return {"file_name": name, "units": units, "duration": durations.tolist()}, words


@pytest.fixture(scope="module")
def grid_corpus(tmp_path_factory):
    """A corpus built by `python -m jaxslm.data.build` from 120 such utterances, and the
    alignment file's words of each."""
    root = tmp_path_factory.mktemp("grid")
    rng = np.random.default_rng(0)
    lines, alignments = [], {}
    for index in range(120):
        line, words = grid_utterance(rng, f"u{index}.wav")
        lines.append(json.dumps(line))
        alignments[line["file_name"]] = words
    (root / "units.jsonl").write_text("\n".join(lines) + "\n")
    (root / "align.json").write_text(json.dumps(alignments))
    argv = ["--units", str(root / "units.jsonl"), "--alignments", str(root / "align.json")]
    argv += ["--num-units", "50", "--frame-seconds", str(FRAME), "--validation-fraction", "0"]
    assert main([*argv, "--out", str(root / "corpus")]) == 0
    tokenizer_dir = root / "tokenizer"
    build_tokenizer(tokenizer_dir)
    return root / "corpus", alignments, HFTokenizer.from_dir(tokenizer_dir)


def slamkit_speech_runs(line: dict, words: list[dict], flags: list[bool], narrow=False):
    """Units of each speech run by slamkit's `_create_interleaved_text`
    (slamkit/tokeniser/interleaving_tokeniser.py): unit end times cumsum(duration) x frame in
    float64, the run's first word start and last word end as read from the JSON, then
    units[bisect_left(times, start) : bisect_right(times, end)]. `narrow`: the word times
    through float32 first (what older jaxslm stored)."""
    times = np.cumsum(line["duration"]) * FRAME
    runs, first = [], 0
    for index in range(1, len(flags) + 1):
        if index == len(flags) or flags[index] != flags[first]:
            if flags[first]:
                start, end = words[first]["start"], words[index - 1]["end"]
                if narrow:
                    start, end = float(np.float32(start)), float(np.float32(end))
                lo, hi = bisect_left(times, start), bisect_right(times, end)
                runs.append(line["units"][lo:hi])
            first = index
    return runs


def speech_runs(tokens: np.ndarray, vocab: SpeechVocab) -> list[list[int]]:
    """The units after each `<speech>` marker of an interleaved document, up to the next
    marker."""
    markers = np.flatnonzero(np.isin(tokens, [vocab.speech_marker_id, vocab.text_marker_id]))
    bounds = [*markers.tolist(), len(tokens)]
    return [
        (tokens[a + 1 : b] - vocab.unit_offset).tolist()
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        if tokens[a] == vocab.speech_marker_id
    ]


def test_speech_runs_follow_slamkits_float64_bounds(grid_corpus):
    path, alignments, tokenizer = grid_corpus
    corpus = open_corpus(path)
    vocab = SpeechVocab("interleaved", len(tokenizer), corpus.num_units, tokenizer.bos_id)
    config = InterleaveConfig(method="random", seed=1)
    columns = corpus.columns("speech", "train")
    assert columns["word_starts"].dtype == np.float64
    encoder = ChunkEncoder(columns, None, corpus.frame_seconds, tokenizer, vocab, config)
    reference = DocumentEncoder(corpus, tokenizer, vocab, config)
    source = corpus.source("speech", "train")
    chunk = encoder.encode([(1, record, 0) for record in range(len(source))])
    float32_differs = 0
    for record in range(len(source)):
        utterance = example_to_utterance(source[record], corpus.frame_seconds)
        words = alignments[utterance.id]
        line = {"units": utterance.units.tolist(), "duration": utterance.durations.tolist()}
        flags = record_flags(config, len(words), record, 0)
        expected = slamkit_speech_runs(line, words, flags)
        assert speech_runs(chunk.document(record)[0], vocab) == expected, utterance.id
        tokens = reference.interleaved(source[record], record, 0)[0]
        assert speech_runs(tokens, vocab) == expected, utterance.id
        float32_differs += slamkit_speech_runs(line, words, flags, narrow=True) != expected
    assert float32_differs >= 10, "the grid must exercise the float32 / float64 difference"


def test_float32_times_of_older_corpora_are_widened_to_the_grid(grid_corpus, tmp_path):
    path, _, _ = grid_corpus
    grid = np.arange(0, 400_000) / 100  # every 0.01 s up to 4000 s, as float64 reads "x.yz"
    np.testing.assert_array_equal(widen_times(grid.astype(np.float32)), grid)
    old = shutil.copytree(path, tmp_path / "old")
    columns = old / COLUMNS_DIR / "speech" / "train"
    for name in ("word_starts", "word_ends"):
        np.save(columns / f"{name}.npy", np.load(columns / f"{name}.npy").astype(np.float32))
    with pytest.warns(UserWarning, match="float32.*Rebuild the corpus"):
        widened = open_corpus(old).columns("speech", "train")
    stored = open_corpus(path).columns("speech", "train")
    for name in ("word_starts", "word_ends"):
        assert widened[name].dtype == np.float64
        np.testing.assert_array_equal(widened[name], stored[name])
    example = open_corpus(path).source("speech", "train")[0]  # an older TFDS record: float32
    narrow = {**example, **{k: example[k].astype(np.float32) for k in ("word_starts", "word_ends")}}
    words = example_to_utterance(narrow, FRAME).words
    assert [(w.start, w.end) for w in words] == list(
        zip(example["word_starts"].tolist(), example["word_ends"].tolist(), strict=True)
    )
