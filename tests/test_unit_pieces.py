"""Unigram-compressed speech tokens: units -> tokens -> units is exact (against SentencePiece's
own decoding), the token corpus keeps every utterance's audio, and a sweep over raw units and
over unigram tokens reports both per second of audio."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from jaxslm import evaluate, generate
from jaxslm.data.corpus import example_to_utterance, open_corpus
from jaxslm.data.synthetic import SyntheticConfig
from jaxslm.data.synthetic_corpus import build_synthetic
from jaxslm.data.unit_pieces import build_piece_corpus, main
from jaxslm.errors import JaxslmError
from jaxslm.scaling.__main__ import main as scaling_main
from jaxslm.speech.unit_pieces import FIRST_CODE_POINT, UnitPieces, train_unit_pieces

VOCAB = 200
TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("unit_pieces")
    config = SyntheticConfig(num_utterances=300, num_text_documents=100, num_validation=20)
    units = build_synthetic(root / "units", config)
    return units, build_piece_corpus(units, VOCAB, root / "pieces")


def _utterances(corpus_dir, split):
    corpus = open_corpus(corpus_dir)
    source = corpus.source("speech", split)
    return [example_to_utterance(source[i], corpus.frame_seconds) for i in range(len(source))]


def test_units_tokens_units_round_trip(corpora):
    units_dir, pieces_dir = corpora
    pieces = UnitPieces.load(pieces_dir / "unit_pieces")
    assert pieces.num_tokens == VOCAB == open_corpus(pieces_dir).num_units
    rng = np.random.default_rng(0)
    unseen = [rng.integers(0, 100, size=n) for n in (1, 7, 300)]
    sequences = [
        u.units for split in ("train", "validation") for u in _utterances(units_dir, split)
    ]
    compressed = 0
    for units in [*sequences, *unseen]:
        tokens = pieces.encode(units)
        assert tokens.min() >= 0 and tokens.max() < VOCAB
        np.testing.assert_array_equal(pieces.decode(tokens), units)
        # SentencePiece's own decoding of the same ids spells the same code points.
        text = pieces.processor.decode((tokens + 1).tolist())
        assert [ord(c) - FIRST_CODE_POINT for c in text] == units.tolist()
        compressed += len(units) - len(tokens)
    assert compressed > 0 and max(len(p) for p in pieces.piece_units) > 1


def test_token_corpus_keeps_the_audio(corpora):
    units_dir, pieces_dir = corpora
    pieces = UnitPieces.load(pieces_dir / "unit_pieces")
    for split in ("train", "validation"):
        before, after = _utterances(units_dir, split), _utterances(pieces_dir, split)
        assert sorted(u.id for u in before) == sorted(u.id for u in after)
        by_id = {u.id: u for u in after}
        for utterance in before:
            token_utterance = by_id[utterance.id]
            np.testing.assert_array_equal(pieces.decode(token_utterance.units), utterance.units)
            # each token lasts its units' frames: the unit ends it keeps are the same times
            ends = np.cumsum(utterance.durations)
            kept = np.cumsum([len(pieces.piece_units[t]) for t in token_utterance.units]) - 1
            np.testing.assert_array_equal(np.cumsum(token_utterance.durations), ends[kept])
            assert token_utterance.words == utterance.words
    line = (pieces_dir / "eval" / "sblimp.jsonl").read_text().splitlines()[0]
    original = (units_dir / "eval" / "sblimp.jsonl").read_text().splitlines()[0]
    encoded, record = json.loads(line), json.loads(original)
    assert pieces.decode(encoded["units"]).tolist() == record["units"]
    assert sum(encoded["duration"]) == sum(record["duration"])


def test_refusals(tmp_path, corpora, capsys):
    with pytest.raises(JaxslmError, match="must exceed the 100 units"):
        train_unit_pieces([np.arange(5)], 100, 100, tmp_path / "m")
    pieces = UnitPieces.load(corpora[1] / "unit_pieces")
    with pytest.raises(JaxslmError, match="outside the unit pieces model's 0..99"):
        pieces.encode(np.array([3, 100]))
    with pytest.raises(JaxslmError, match="--max-sequences 0: must be at least 1"):
        build_piece_corpus(corpora[0], VOCAB, tmp_path / "none", max_sequences=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file_name": "a.wav", "units": [1, 2], "duration": [1]}\n')
    model = str(corpora[1] / "unit_pieces")
    assert main(["encode", "--model", model, "--units", str(bad), "--out", "o.jsonl"]) == 2
    assert f"{bad}:1: 'duration' has 1 values for 2 units" in capsys.readouterr().err
    for units, message in [
        ([1, 100], "units 1..100 are outside the unit pieces model's 0..99"),
        ([1, "x"], "'units' must be a list of non-negative integers"),
    ]:
        line = json.dumps({"file_name": "a.wav", "units": units})
        bad.write_text('{"ok": 1}\n' + line + "\n")
        assert main(["encode", "--model", model, "--units", str(bad), "--out", "o.jsonl"]) == 2
        assert f"{bad}:2: {message}" in capsys.readouterr().err


def test_sweep_over_units_and_tokens_per_audio_second(corpora, tmp_path):
    """One tiny speech-only run on each corpus; runs.csv reports both per second of audio,
    restated here from the corpus records: tokens / (frames x frame_seconds)."""
    rows = {}
    for corpus_dir in corpora:
        base = tmp_path / f"{corpus_dir.name}.yaml"
        base.write_text(
            f"data:\n  corpus: {corpus_dir}\n  seq_len: 64\n  batch_size: 8\n"
            "model:\n  max_position_embeddings: 64\nvocab:\n  mode: speech-only\n"
            "schedule:\n  warmup_steps: 0\n"
        )
        out = tmp_path / f"sweep_{corpus_dir.name}"
        sweep = {
            "base": str(base),
            "out": str(out),
            "params": [2e4],
            "steps": [2],
            "aspect": 16,
            "head_dim": 16,
            "overrides": ["eval.batches=1"],
        }
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
        assert scaling_main(["sweep", str(tmp_path / "sweep.yaml")]) == 0
        with open(out / "runs.csv", newline="") as handle:
            (rows[corpus_dir.name],) = csv.DictReader(handle)
    seconds, directories = {}, {corpus_dir.name: corpus_dir for corpus_dir in corpora}
    for name, row in rows.items():
        utterances = _utterances(directories[name], "train")
        audio = sum(float(np.sum(u.durations)) * u.frame_seconds for u in utterances)
        rate = sum(len(u.units) for u in utterances) / audio
        seconds[name] = audio
        assert float(row["tokens_per_audio_second"]) == pytest.approx(rate)
        assert float(row["audio_seconds"]) == pytest.approx(int(row["tokens"]) / rate)
        assert float(row["loss_per_audio_second"]) == pytest.approx(float(row["loss"]) * rate)
        assert float(row["flops_per_audio_second"]) == pytest.approx(6 * int(row["params"]) * rate)
    assert seconds["units"] == pytest.approx(seconds["pieces"])
    assert float(rows["pieces"]["tokens_per_audio_second"]) < float(
        rows["units"]["tokens_per_audio_second"]
    )
    _generate_and_score(corpora, tmp_path / "sweep_pieces" / "runs" / rows["pieces"]["name"])


def _generate_and_score(corpora, run_dir):
    """The token model continues a unit prompt (encoded, then decoded back to units) and
    scores the token corpus's encoded sBLIMP set, and the unit set through --unit-pieces."""
    units_dir, pieces_dir = corpora
    pieces = UnitPieces.load(pieces_dir / "unit_pieces")
    (line, *_) = (units_dir / "eval" / "sblimp.jsonl").read_text().splitlines()
    prompt = run_dir.parent / "prompt.jsonl"
    prompt.write_text(line + "\n")
    out = run_dir.parent / "continuations.jsonl"
    argv = ["--checkpoint", str(run_dir), "--prompt-units", str(prompt), "--modality", "speech"]
    argv += ["--out", str(out), "--temperature", "1", "--seed", "3", "--max-new-tokens", "6"]
    argv += ["--prompt-seconds", "0", "--unit-pieces", str(pieces_dir / "unit_pieces")]
    assert generate.main([*argv, "--no-progress"]) == 0
    (record,) = [json.loads(text) for text in out.read_text().splitlines()]
    # speech-only layout: <S> = 1, then token t as id t + 2
    expected = [1, *(pieces.encode(np.array(json.loads(line)["units"])) + 2).tolist()]
    assert record["prompt_ids"] == expected
    assert record["units"] == pieces.decode(record["tokens"]).tolist()
    # evaluate's generative task reads the same prompt as tokens, so it draws the same
    # sample, and vocodes its decoded units
    items_out, audio_out = run_dir.parent / "items.jsonl", run_dir.parent / "audio"
    argv = ["--checkpoint", str(run_dir), "--task", "generate", "--data", str(prompt)]
    argv += ["--vocoder", "toy", "--audio-out", str(audio_out), "--pairs-out", str(items_out)]
    argv += ["--temperature", "1", "--seed", "3", "--max-new-tokens", "6", "--prompt-seconds", "0"]
    argv += ["--unit-pieces", str(pieces_dir / "unit_pieces"), "--no-progress"]
    assert evaluate.main(argv) == 0
    (item,) = [json.loads(text) for text in items_out.read_text().splitlines()]
    assert item["prompt_units"] == json.loads(line)["units"]
    assert item["units"] == record["units"] != record["tokens"]
    results = run_dir.parent / "scores.json"
    argv = ["--checkpoint", str(run_dir), "--data-dir", str(pieces_dir / "eval")]
    argv += ["--task", "sblimp", "--out", str(results), "--no-progress"]
    assert evaluate.main(argv) == 0
    scores = json.loads(results.read_text())["tasks"]["sblimp"]
    assert 0 <= scores["accuracy"] <= 1
    # the raw-unit set, encoded by the scorer, scores as the set the corpus builder encoded
    argv = ["--checkpoint", str(run_dir), "--data-dir", str(units_dir / "eval")]
    argv += ["--task", "sblimp", "--out", str(results), "--no-progress"]
    assert evaluate.main([*argv, "--unit-pieces", str(pieces_dir / "unit_pieces")]) == 0
    from_units = json.loads(results.read_text())["tasks"]["sblimp"]
    assert from_units.pop("data") != scores.pop("data") and from_units == scores


def test_interleaved_speech_runs_over_tokens(corpora, tmp_path):
    """Interleaving a token corpus cuts speech runs by the units' rule: a run over words
    [start, end] holds the tokens whose last unit ends in [start, end], so a token straddling
    a word boundary goes to the word it ends in. Decoded, a run is then the raw-unit run of
    the same words shifted by less than one token at each edge. An interleaved tiny model
    trains on the token corpus."""
    from jaxslm.data.interleave import build_interleaved
    from jaxslm.vocab import SpeechVocab

    units_dir, pieces_dir = corpora
    pieces = UnitPieces.load(pieces_dir / "unit_pieces")
    lengths = np.asarray([len(p) for p in pieces.piece_units])
    raw_vocab = SpeechVocab("interleaved", 1, open_corpus(units_dir).num_units)
    token_vocab = SpeechVocab("interleaved", 1, VOCAB)
    tokens_by_id = {u.id: u for u in _utterances(pieces_dir, "validation")}
    rng = np.random.default_rng(3)
    straddled = 0
    for raw in _utterances(units_dir, "validation"):
        tokens = tokens_by_id[raw.id]
        flags = rng.random(len(raw.words)) < 0.5
        runs = {}
        for name, utterance, vocab in (("raw", raw, raw_vocab), ("tokens", tokens, token_vocab)):
            ids, _ = build_interleaved(utterance, flags, lambda text: [0], vocab)
            cuts = np.flatnonzero(ids >= vocab.speech_marker_id).tolist() + [ids.size]
            runs[name] = [
                ids[a + 1 : b] - vocab.unit_offset
                for a, b in zip(cuts[:-1], cuts[1:], strict=True)
                if ids[a] == vocab.speech_marker_id
            ]
        unit_ends, token_ends = raw.unit_end_times(), tokens.unit_end_times()
        assert set(token_ends.tolist()) <= set(unit_ends.tolist())
        starts = [i for i in range(len(flags)) if flags[i] and (i == 0 or not flags[i - 1])]
        for index, first in enumerate(starts):
            last = first
            while last + 1 < len(flags) and flags[last + 1]:
                last += 1
            start, end = raw.words[first].start, raw.words[last].end
            inside = (unit_ends >= start) & (unit_ends <= end)
            np.testing.assert_array_equal(runs["raw"][index], raw.units[inside])
            kept = (token_ends >= start) & (token_ends <= end)
            np.testing.assert_array_equal(runs["tokens"][index], tokens.units[kept])
            if not kept.any():
                continue
            decoded = pieces.decode(runs["tokens"][index])
            b = int(np.flatnonzero(unit_ends == token_ends[kept][-1])[0]) + 1
            a = b - decoded.size
            np.testing.assert_array_equal(decoded, raw.units[a:b])
            lo, hi = np.flatnonzero(inside)[[0, -1]] + [0, 1]
            first_token, next_token = np.flatnonzero(kept)[0], np.flatnonzero(kept)[-1] + 1
            assert 0 <= lo - a < lengths[tokens.units[first_token]]
            right = lengths[tokens.units[next_token]] if next_token < kept.size else 1
            assert 0 <= hi - b < right
            straddled += (lo - a) + (hi - b) > 0
    assert straddled > 0, "no token straddled a word boundary"
    run_dir = tmp_path / "run"
    overrides = [f"data.corpus={pieces_dir}", "data.seq_len=128", "data.batch_size=8"]
    overrides += [f"run_dir={run_dir}", "budget.max_steps=30", "eval.every_steps=0"]
    overrides += ["eval.tasks=[]", "checkpoint.every_steps=30", "logging.every_steps=1"]
    overrides += ["logging.progress_bar=false", "mesh.data=8"]
    from jaxslm.config import load_config
    from jaxslm.training.metrics_log import read_metrics
    from jaxslm.training.trainer import train

    train(load_config(TINY, overrides))
    records = [r for r in read_metrics(run_dir) if "loss_speech" in r]
    assert records[-1]["loss_speech"] < records[0]["loss_speech"] - 1.0
    assert all(r["loss_text"] > 0 for r in records)
