"""Packed tokens per second of the Grain pipeline on the built-in corpus, beside a plain Python
loop doing the same interleave + tokenize + pack (the slamkit-style baseline), one process.

    python benchmarks/data_pipeline.py [--seq-len 1024] [--batch-size 8] [--batches 300]
        [--repeats 5]

Both are run `--repeats` times, alternating; the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from jaxslm.data.corpus import example_to_document, example_to_utterance, open_corpus
from jaxslm.data.interleave import choose_speech_words, record_rng
from jaxslm.data.pipeline import PipelineConfig, make_pipeline
from jaxslm.data.synthetic_corpus import build_synthetic
from jaxslm.text_tokenizer import load_text_tokenizer
from jaxslm.vocab import SpeechVocab


def pipeline_rate(corpus, tokenizer, vocab, config: PipelineConfig, batches: int) -> float:
    """Real (loss-masked) tokens per second of the jaxslm pipeline, after one warm-up batch."""
    iterator = iter(make_pipeline(corpus, tokenizer, vocab, config))
    next(iterator)
    start, tokens = time.perf_counter(), 0
    for _ in range(batches):
        tokens += int(next(iterator)["loss_mask"].sum())
    return tokens / (time.perf_counter() - start)


def baseline_rate(corpus, tokenizer, vocab, seq_len: int, seconds: float) -> float:
    """A plain loop: read a record, interleave it, tokenize, and pack greedily into rows of
    seq_len + 1 tokens (as slamkit cuts and packs), for `seconds`."""
    speech, text = corpus.source("speech", "train"), corpus.source("text", "train")
    row: list[int] = []
    start, tokens, record = time.perf_counter(), 0, 0
    while time.perf_counter() - start < seconds:
        if record % 4 == 0:
            ids = tokenizer.encode(example_to_document(text[record % len(text)]).text)
        else:
            utterance = example_to_utterance(speech[record % len(speech)], corpus.frame_seconds)
            spoken = choose_speech_words(len(utterance.words), record_rng(0, 0, record))
            ids = [tokenizer.bos_id]
            for word, is_speech in zip(utterance.words, spoken, strict=True):
                if is_speech:
                    ends = utterance.unit_end_times()
                    units = utterance.units[(ends >= word.start) & (ends <= word.end)]
                    ids += [vocab.speech_marker_id, *vocab.units_to_ids(units).tolist()]
                else:
                    ids += [vocab.text_marker_id, *tokenizer.encode(word.text, False)]
        row += ids
        while len(row) > seq_len:
            tokens += seq_len
            row = row[seq_len:]
        record += 1
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument("--corpus", default=None, help="built-in corpus dir (default: build one)")
    args = parser.parse_args()
    path = Path(args.corpus or Path(tempfile.mkdtemp()) / "toy")
    if not path.exists():
        build_synthetic(path)
    corpus = open_corpus(path)
    tokenizer = load_text_tokenizer(corpus.path("tokenizer"))
    vocab = SpeechVocab("interleaved", len(tokenizer), corpus.num_units, bos_id=tokenizer.bos_id)
    config = PipelineConfig(seq_len=args.seq_len, batch_size=args.batch_size)
    ours, baseline = [], []
    for _ in range(args.repeats):
        ours.append(pipeline_rate(corpus, tokenizer, vocab, config, args.batches))
        baseline.append(
            baseline_rate(corpus, tokenizer, vocab, args.seq_len, args.baseline_seconds)
        )
    print(f"built-in corpus, seq_len {args.seq_len}, batch {args.batch_size}, 1 process (CPU)")
    print("runs, tokens/s: pipeline " + ", ".join(f"{r:,.0f}" for r in ours))
    print("                plain loop " + ", ".join(f"{r:,.0f}" for r in baseline))
    ours_median, baseline_median = statistics.median(ours), statistics.median(baseline)
    print(f"jaxslm Grain pipeline : {ours_median:12,.0f} packed tokens/s (median)")
    print(f"plain Python loop     : {baseline_median:12,.0f} tokens/s (median)")
    print(f"ratio                 : {ours_median / baseline_median:12.2f}x")


if __name__ == "__main__":
    main()
