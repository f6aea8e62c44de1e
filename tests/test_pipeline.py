"""The Grain pipeline on the built-in corpus: interleaving statistics, packing that loses no
token, exact resume in a fresh process, and disjoint per-process shards."""

import json
import math
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from references import plain_poisson_rule, runs, slamkit_chunks
from tiny_tokenizers import build_tokenizer

from jaxslm.data.corpus import COLUMNS_DIR, columns_from_source, example_to_utterance, open_corpus
from jaxslm.data.encode import ChunkEncoder, DocumentEncoder
from jaxslm.data.interleave import InterleaveConfig
from jaxslm.data.pipeline import PipelineConfig, make_pipeline
from jaxslm.data.record_order import StreamOrder
from jaxslm.data.synthetic import SyntheticConfig
from jaxslm.data.synthetic_corpus import build_synthetic
from jaxslm.errors import JaxslmError
from jaxslm.text_tokenizer import HFTokenizer, load_text_tokenizer
from jaxslm.vocab import MARKER, SpeechVocab

RESUME_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_pipeline import open_setup, batches_after
corpus, tokenizer, vocab = open_setup({corpus!r})
state = json.load(open({state!r}))
np.savez({out!r}, *batches_after(corpus, tokenizer, vocab, state, 3))
"""


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    config = SyntheticConfig(num_utterances=400, num_text_documents=300, num_validation=20)
    return build_synthetic(tmp_path_factory.mktemp("corpus") / "toy", config)


def open_setup(path):
    """Corpus, its tokenizer and an interleaved vocabulary over both."""
    corpus = open_corpus(path)
    tokenizer = load_text_tokenizer(corpus.path("tokenizer"))
    vocab = SpeechVocab("interleaved", len(tokenizer), corpus.num_units, bos_id=tokenizer.bos_id)
    return corpus, tokenizer, vocab


PIPELINE = PipelineConfig(seq_len=128, batch_size=4, read_threads=2)


def batches_after(corpus, tokenizer, vocab, state, count):
    """`count` batches of a pipeline restored to `state`."""
    iterator = iter(make_pipeline(corpus, tokenizer, vocab, PIPELINE))
    iterator.set_state(state)
    return [next(iterator)["tokens"] for _ in range(count)]


def _utterances(corpus):
    source = corpus.source("speech", "train")
    return [example_to_utterance(source[i], corpus.frame_seconds) for i in range(len(source))]


def test_interleaving_statistics_on_the_builtin_corpus(corpus_dir):
    from jaxslm.data.interleave import choose_speech_words, record_rng

    corpus, tokenizer, vocab = open_setup(corpus_dir)
    encoder = DocumentEncoder(corpus, tokenizer, vocab, InterleaveConfig())
    source = corpus.source("speech", "train")
    spoken_words, total_words, our_runs = 0, 0, []
    for record in range(len(source)):
        tokens, modality = encoder.interleaved(source[record], record, epoch=0)
        assert np.array_equal(encoder.interleaved(source[record], record, epoch=0)[0], tokens)
        utterance = example_to_utterance(source[record], corpus.frame_seconds)
        spoken = choose_speech_words(len(utterance.words), record_rng(0, 0, record)).tolist()
        body, codes = tokens[1:], modality[1:]  # after BOS
        markers = np.flatnonzero(codes == MARKER).tolist()
        word_runs = runs(spoken)
        assert markers[0] == 0 and len(markers) == len(word_runs), (
            "a marker at start and each switch"
        )
        ends = utterance.unit_end_times()
        for (flag, first, stop), start, end in zip(
            word_runs, markers, [*markers[1:], len(body)], strict=True
        ):
            content = body[start + 1 : end]
            if flag:
                lo = np.searchsorted(ends, utterance.words[first].start, side="left")
                hi = np.searchsorted(ends, utterance.words[stop - 1].end, side="right")
                assert body[start] == vocab.speech_marker_id
                np.testing.assert_array_equal(content, vocab.units_to_ids(utterance.units[lo:hi]))
            else:
                assert body[start] == vocab.text_marker_id
                text = "".join(w.text for w in utterance.words[first:stop])
                assert tokenizer.decode(content.tolist()) == text.strip()
        spoken_words += sum(spoken)
        total_words += len(spoken)
        our_runs += [stop - first for flag, first, stop in word_runs if flag]
    rnd = random.Random(0)
    sizes = [len(u.words) for u in _utterances(corpus)]
    plain = [plain_poisson_rule(n, rnd) for n in sizes]
    plain_runs = [stop - first for flags in plain for f, first, stop in runs(flags) if f]
    plain_share = sum(map(sum, plain)) / sum(sizes)
    assert plain_share > 0.33, "slamkit's last span overshoots eta = 0.3"
    assert abs(spoken_words / total_words - plain_share) < 0.03
    assert abs(np.mean(our_runs) - np.mean(plain_runs)) < 0.1 * np.mean(plain_runs)
    changed = sum(
        not np.array_equal(
            encoder.interleaved(source[r], r, 0)[0], encoder.interleaved(source[r], r, 1)[0]
        )
        for r in range(50)
    )
    assert changed >= 40, "the next epoch re-samples most records"


@pytest.mark.parametrize("mode", ["interleaved", "hf-tokenizer", "speech-only"])
def test_chunk_encoder_gives_the_record_encoders_documents(corpus_dir, tmp_path, mode):
    corpus, tokenizer, vocab = open_setup(corpus_dir)
    if mode == "speech-only":
        tokenizer, vocab = None, SpeechVocab.speech_only(corpus.num_units)
    if mode == "hf-tokenizer":
        build_tokenizer(tmp_path)
        tokenizer = HFTokenizer.from_dir(tmp_path)
        vocab = SpeechVocab("interleaved", len(tokenizer), corpus.num_units, tokenizer.bos_id)
    config = InterleaveConfig(seed=3)
    reference = DocumentEncoder(corpus, tokenizer, vocab, config)
    speech, text = corpus.columns("speech", "train"), corpus.columns("text", "train")
    encoder = ChunkEncoder(speech, text, corpus.frame_seconds, tokenizer, vocab, config)
    sources = {0: corpus.source("text", "train"), 1: corpus.source("speech", "train")}
    sources[2] = sources[1]
    streams = (2,) if mode == "speech-only" else (0, 1, 2)
    documents = [(s, r, e) for e in (0, 1) for r in range(0, 300, 7) for s in streams]
    expected = []
    for stream, record, epoch in documents:
        example = sources[stream][record]
        if stream == 0:
            expected.append(reference.text(example))
        elif stream == 1:
            expected.append(reference.interleaved(example, record, epoch))
        else:
            expected.append(reference.speech(example))
    chunk = encoder.encode(documents)
    assert len(chunk) == len(expected)
    for index, (tokens, modality) in enumerate(expected):
        ours = chunk.document(index)
        np.testing.assert_array_equal(ours[0], tokens)
        np.testing.assert_array_equal(ours[1], modality)


def test_corpus_without_columns_is_converted_on_open(corpus_dir, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(corpus_dir, copy, ignore=shutil.ignore_patterns(COLUMNS_DIR))
    corpus, saved = open_corpus(copy), open_corpus(corpus_dir)
    for stream in ("speech", "text"):
        converted, stored = corpus.columns(stream, "train"), saved.columns(stream, "train")
        assert converted.arrays.keys() == stored.arrays.keys()
        for name, array in stored.arrays.items():
            np.testing.assert_array_equal(converted[name], array)
    source = corpus.source("speech", "validation")
    assert len(columns_from_source(source, "speech", corpus.frame_seconds)) == len(source)


def _epoch_tokens(corpus, tokenizer, vocab, weights):
    config = PipelineConfig(seq_len=128, batch_size=4, num_epochs=1, stream_weights=weights)
    batches = list(make_pipeline(corpus, tokenizer, vocab, config))
    assert all(b["tokens"].shape == (4, 128) for b in batches)
    return batches


@pytest.mark.parametrize("stream", ["text", "interleaved", "speech"])
def test_one_epoch_packs_every_chunk_token_once(corpus_dir, stream):
    corpus, tokenizer, vocab = open_setup(corpus_dir)
    weights = {"text": (1, 0, 0), "interleaved": (0, 1, 0), "speech": (0, 0, 1)}[stream]
    batches = _epoch_tokens(corpus, tokenizer, vocab, weights)
    encoder = DocumentEncoder(corpus, tokenizer, vocab, InterleaveConfig())
    source = corpus.source("text" if stream == "text" else "speech", "train")
    expected = Counter()
    for record in range(len(source)):
        if stream == "text":
            tokens = [
                tokenizer.bos_id,
                *tokenizer.encode(source[record]["text"].decode(), add_special_tokens=False),
            ]
        elif stream == "speech":
            tokens = [tokenizer.bos_id, *vocab.units_to_ids(source[record]["units"])]
        else:
            tokens = encoder.interleaved(source[record], record, epoch=0)[0]
        for chunk in slamkit_chunks(list(tokens), 128):
            expected.update(zip(chunk[:-1], chunk[1:], strict=True))
    seen = Counter()
    for batch in batches:
        real = batch["loss_mask"] == 1
        seen.update(
            zip(batch["tokens"][real].tolist(), batch["targets"][real].tolist(), strict=True)
        )
        assert (batch["segment_ids"][~real] == 0).all()
    assert seen == Counter({(int(a), int(b)): c for (a, b), c in expected.items()})


def test_restored_iterator_continues_exactly_in_a_fresh_process(corpus_dir, tmp_path):
    corpus, tokenizer, vocab = open_setup(corpus_dir)
    iterator = iter(make_pipeline(corpus, tokenizer, vocab, PIPELINE))
    for _ in range(5):
        next(iterator)
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(iterator.get_state()))
    expected = [next(iterator)["tokens"] for _ in range(3)]
    script = RESUME_SCRIPT.format(
        tests=str(Path(__file__).parent),
        corpus=str(corpus_dir),
        state=str(state_file),
        out=str(tmp_path / "resumed.npz"),
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    resumed = np.load(tmp_path / "resumed.npz")
    for index, tokens in enumerate(expected):
        np.testing.assert_array_equal(resumed[f"arr_{index}"], tokens)


def _segments(batches):
    """Every packed segment as a tuple of its tokens plus its last target."""
    found = Counter()
    for batch in batches:
        for row in range(len(batch["tokens"])):
            ids = batch["segment_ids"][row]
            for number in np.unique(ids[ids > 0]):
                where = ids == number
                found[
                    (*batch["tokens"][row][where].tolist(), int(batch["targets"][row][where][-1]))
                ] += 1
    return found


def test_two_processes_split_the_stream_without_overlap(corpus_dir):
    corpus, tokenizer, vocab = open_setup(corpus_dir)
    config = PipelineConfig(seq_len=1024, batch_size=4, num_epochs=1, stream_weights=(0, 0, 1))
    single = _segments(make_pipeline(corpus, tokenizer, vocab, config, 0, 1))
    halves = [_segments(make_pipeline(corpus, tokenizer, vocab, config, i, 2)) for i in range(2)]
    assert not set(halves[0]) & set(halves[1])
    assert halves[0] + halves[1] == single
    assert sum(single.values()) == len(corpus.source("speech", "train"))


def _slamkit_chunks_of_epoch(corpus, tokenizer, vocab, stream: int, seq_len: int, order=None):
    """Every document of `stream` (epoch 0; records in `order`, default as stored) cut into
    slamkit's context-length chunks."""
    encoder = DocumentEncoder(corpus, tokenizer, vocab, InterleaveConfig())
    source = corpus.source("text" if stream == 0 else "speech", "train")
    encode = [encoder.text, lambda e, r: encoder.interleaved(e, r, 0), encoder.speech][stream]
    chunks = []
    for record in range(len(source)) if order is None else order:
        example = source[record]
        tokens = encode(example, record) if stream == 1 else encode(example)
        chunks += slamkit_chunks(tokens[0].tolist(), seq_len)
    return chunks


def test_streams_mix_per_sample_as_slamkit_mixes_chunks(corpus_dir):
    """slamkit draws the stream of every context-length chunk by weight (`interleave_datasets`
    over chunked datasets, slamkit/data/hf_dataset.py), so a stream's share of the targets is
    its weight x its mean targets per chunk, normalised. Drawn per document instead, streams
    of long documents would take far more (the second check)."""
    corpus, tokenizer, vocab = open_setup(corpus_dir)
    seq_len, weights = 32, np.asarray([0.2024, 0.5433, 0.2543])
    per_chunk, per_document = [], []
    for stream in range(3):
        chunks = _slamkit_chunks_of_epoch(corpus, tokenizer, vocab, stream, seq_len)
        per_chunk.append(np.mean([len(chunk) - 1 for chunk in chunks]))
        documents = _slamkit_chunks_of_epoch(corpus, tokenizer, vocab, stream, 10**9)
        per_document.append(np.mean([len(document) - 1 for document in documents]))
    expected = weights * per_chunk / np.sum(weights * per_chunk)
    whole_documents = weights * per_document / np.sum(weights * per_document)
    assert np.abs(expected - whole_documents).max() > 0.1
    config = PipelineConfig(seq_len=seq_len, batch_size=16, stream_weights=tuple(weights))
    counts = np.zeros(3)
    for _, batch in zip(range(150), make_pipeline(corpus, tokenizer, vocab, config), strict=False):
        counts += np.bincount(batch["stream"][batch["loss_mask"] > 0], minlength=3)
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.02)


def test_batches_of_samples_hold_that_many_samples_each(corpus_dir):
    """`samples_per_step`: a step is exactly that many samples (slamkit's
    per_device_train_batch_size x accumulation), each a slamkit chunk, packed into the rows.
    One stream, so the samples come in the epoch's record order, chunk after chunk."""
    corpus, tokenizer, vocab = open_setup(corpus_dir)
    seq_len, samples = 64, 6
    size = len(corpus.source("speech", "train"))
    order = [record for record, _ in StreamOrder(size, 0, 2, 0, 1, 1).take(0, size)]
    chunks = _slamkit_chunks_of_epoch(corpus, tokenizer, vocab, 2, seq_len, order)
    assert any(len(chunk) == 1 for chunk in chunks)  # a sample without targets still counts
    config = PipelineConfig(
        seq_len=seq_len,
        batch_size=8,
        samples_per_step=samples,
        num_epochs=1,
        stream_weights=(0, 0, 1),
    )
    batches = list(make_pipeline(corpus, tokenizer, vocab, config))
    assert len(batches) == math.ceil(len(chunks) / samples)
    for step, batch in enumerate(batches):
        assert batch["tokens"].shape == (8, seq_len)
        step_chunks = chunks[step * samples : (step + 1) * samples]
        expected = Counter((*chunk[:-1], chunk[-1]) for chunk in step_chunks if len(chunk) > 1)
        assert _segments([batch]) == expected
        assert batch["loss_mask"].sum() == sum(len(chunk) - 1 for chunk in step_chunks)
    with pytest.raises(JaxslmError, match="raise batch_size to at least 9"):
        make_pipeline(corpus, tokenizer, vocab, PipelineConfig(batch_size=8, samples_per_step=9))


def test_states_of_per_document_mixing_are_refused(corpus_dir):
    corpus, tokenizer, vocab = open_setup(corpus_dir)
    iterator = iter(make_pipeline(corpus, tokenizer, vocab, PIPELINE))
    old = {"chunk": 3, "positions": [10, 20, 30], "packer": {"rows": []}, "served": 1}
    with pytest.raises(JaxslmError, match="older jaxslm.*new run_dir"):
        iterator.set_state(old)
