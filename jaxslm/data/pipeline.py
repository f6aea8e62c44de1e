"""The Grain pipeline: corpus streams -> shuffled, interleaved, tokenized documents cut into
samples -> mixed per sample -> packed rows -> batches of this process's shard, with a
checkpointable iterator.

Three streams, sampled by `stream_weights` (SIMS default [0.2024, 0.5433, 0.2543]):
  text         plain text documents (the tokenizer's BOS convention);
  interleaved  utterances with word alignments, cut into `<speech>`/`<text>` runs afresh every
               epoch from (seed, epoch, record);
  speech       plain units; `<S> units <S>` for speech-only vocabularies.
A document is cut into samples of at most `seq_len` tokens, and each sample's stream is drawn
by weight, as slamkit mixes its context-length chunks with `interleave_datasets`
(slamkit/data/hf_dataset.py): a weight is a share of samples, so a stream of long documents
gets no more than its weight of them. Each process reads records
`process_index::process_count` of every stream, so processes see disjoint documents whose union
is the one-process stream, and packs its own rows.

Samples are mixed `block_samples` at a time (jaxslm.data.record_order draws the streams,
jaxslm.data.samples gives each stream's samples from its documents, encoded by
jaxslm.data.encode from the corpus's columnar copy; jaxslm.data.packing packs them) inside one
Grain dataset, `PackedBatches`, behind Grain's thread prefetch. A step is `batch_size` full
rows, or with `samples_per_step` exactly that many samples packed into `batch_size` rows (the
rest padding). The iterator's state is where the current block started (block number, stream
positions, open rows) and how many of its rows (or samples) were served: a restored iterator
re-makes that block and goes on exactly.
"""

from __future__ import annotations

import atexit
import weakref
from dataclasses import dataclass, field
from typing import Any

import grain
import jax
import numpy as np

from jaxslm.data.batch_split import check_batch_split
from jaxslm.data.corpus import Corpus
from jaxslm.data.encode import ChunkEncoder
from jaxslm.data.interleave import InterleaveConfig
from jaxslm.data.packing import ROW_FIELDS, Packer
from jaxslm.data.record_order import SIMS_WEIGHTS, StreamOrder, block_picks, check_stream_weights
from jaxslm.data.samples import SampleStream
from jaxslm.errors import JaxslmError
from jaxslm.text_tokenizer import TextTokenizer
from jaxslm.vocab import SpeechVocab

STATE_FORMAT = 2  # per-sample mixing; states of per-document mixing (no "format") are refused


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline produces: rows of `seq_len` next-token pairs, `batch_size` rows per
    step summed over processes; with `samples_per_step`, exactly that many samples per step
    (summed over processes) packed into those rows.

    `open_rows`: partly filled rows the packer keeps; `block_samples`: samples mixed together
    (and documents encoded at a time per stream); `read_threads`: threads of the batched text
    tokenizer (SentencePiece); `prefetch_batches`: batches made ahead in a background thread
    (0: none).
    """

    seq_len: int = 1024
    batch_size: int = 8
    samples_per_step: int | None = None
    stream_weights: tuple[float, float, float] = SIMS_WEIGHTS
    interleave: InterleaveConfig = field(default_factory=InterleaveConfig)
    seed: int = 0
    num_epochs: int | None = None
    split: str = "train"
    open_rows: int = 8
    read_threads: int = 2
    prefetch_batches: int = 2
    block_samples: int = 256


def make_pipeline(
    corpus: Corpus,
    tokenizer: TextTokenizer | None,
    vocab: SpeechVocab,
    config: PipelineConfig,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.IterDataset:
    """Batches (dicts of [batch_size / process_count, seq_len] arrays) for this process.

    `iter(...)` of the result has `get_state()` / `set_state()`: a restored iterator yields
    exactly the batches the original would have.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    check_batch_split(
        config.batch_size, processes=count, samples_per_step=config.samples_per_step, prefix=""
    )
    corpus.check_units(vocab.num_units)
    weights = _weights(vocab, config)
    codes = [code for code, weight in enumerate(weights) if weight > 0]
    kinds = {"speech": any(weights[1:]), "text": weights[0] > 0}
    for kind, on in kinds.items():
        if on and not corpus.has(kind):
            raise _nothing_to_draw(corpus, config.split, weights, kind, f"no {kind} records")
    columns = {k: corpus.columns(k, config.split) if on else None for k, on in kinds.items()}
    if weights[1] > 0 and columns["speech"]["word_offsets"][-1] == 0:
        raise _nothing_to_draw(
            corpus, config.split, weights, "interleaved", "no utterance with word alignments"
        )
    encoder = ChunkEncoder(
        columns["speech"],
        columns["text"],
        corpus.frame_seconds,
        tokenizer,
        vocab,
        config.interleave,
        config.read_threads,
    )
    streams = []
    for code in codes:
        size = len(columns["text" if code == 0 else "speech"])
        order = StreamOrder(size, config.seed, code, index, count, config.num_epochs)
        streams.append(SampleStream(order, code, encoder, config.seq_len, config.block_samples))
    samples = None if config.samples_per_step is None else config.samples_per_step // count
    batches = PackedBatches(
        streams, [weights[c] for c in codes], config, config.batch_size // count, samples
    )
    if config.prefetch_batches <= 0:
        return batches
    return _ClosedAtExit(batches, prefetch_buffer_size=config.prefetch_batches)


def _nothing_to_draw(corpus: Corpus, split: str, weights, stream: str, lack: str) -> JaxslmError:
    """The error for a stream with a positive weight and nothing to draw from in `split`."""
    fixes = {
        "text": "build the corpus with --text FILES",
        "speech": "build the corpus with --units FILES",
        "interleaved": "build the corpus with --alignments JSON (or aligned_text fields)",
    }
    index = ("text", "interleaved", "speech").index(stream)
    zeroed = [0 if i == index else w for i, w in enumerate(weights)]
    return JaxslmError(
        f"data.corpus={corpus.directory}: the {split!r} split has {lack}, but "
        f"data.stream_weights={list(weights)} draws from the {stream} stream: "
        f"{fixes[stream]}, or set data.stream_weights={zeroed}"
    )


def empty_rows(count: int, length: int) -> dict[str, np.ndarray]:
    """`count` rows of padding (no targets)."""
    return {name: np.zeros((count, length), dtype) for name, dtype in ROW_FIELDS.items()}


def _weights(vocab: SpeechVocab, config: PipelineConfig) -> tuple[float, float, float]:
    """Stream weights allowed by the vocabulary (speech-only: speech; text: text)."""
    if vocab.mode == "speech-only":
        return (0.0, 0.0, 1.0)
    if vocab.mode == "text":
        return (1.0, 0.0, 0.0)
    check_stream_weights(config.stream_weights)
    return tuple(float(w) for w in config.stream_weights)


class PackedBatches(grain.IterDataset):
    """Batches of packed rows from the streams mixed per sample, made a block at a time:
    `rows` full rows per batch, or `samples` samples packed into `rows` rows."""

    def __init__(
        self,
        streams: list[SampleStream],
        weights: list[float],
        config: PipelineConfig,
        rows: int,
        samples: int | None,
    ):
        super().__init__()
        self.streams, self.weights, self.config = streams, weights, config
        self.rows, self.samples = rows, samples

    def __iter__(self) -> grain.DatasetIterator:
        return _PackedBatchesIterator(self)


class _PackedBatchesIterator(grain.DatasetIterator):
    """State: the current block's number, the stream positions and the open rows where it
    started, and how many of its items (rows, or samples when batching by samples) were
    served."""

    def __init__(self, dataset: PackedBatches):
        super().__init__()
        self.dataset = dataset
        self.packer = Packer(dataset.config.seq_len, dataset.config.open_rows)
        self.per_step = dataset.rows if dataset.samples is None else dataset.samples
        self.set_state(
            {
                "format": STATE_FORMAT,
                "block": 0,
                "positions": [[0, 0]] * len(dataset.streams),
                "packer": {"rows": []},
                "served": 0,
            }
        )

    def __next__(self) -> dict[str, np.ndarray]:
        items = []
        while len(items) < self.per_step:
            if self.ready is None:
                self.packer.set_state(self.start_packer)
                self._make_block()
            if self.served < len(self.ready):
                take = self.ready[self.served : self.served + self.per_step - len(items)]
                items += take
                self.served += len(take)
            elif self.last:
                break
            else:
                self.block, self.positions, self.served = self.block + 1, self.after, 0
                self.start_packer = self.packer.get_state()
                self._make_block()
        if not items:
            raise StopIteration
        if self.dataset.samples is not None:
            items = _pack_samples(items, self.dataset.config.seq_len, self.dataset.rows)
        return _batch(items, self.dataset.rows, self.dataset.config.seq_len)

    def _make_block(self) -> None:
        """Draw, take and (by rows) pack the current block's samples, with the packer where
        the block starts; the last block (every stream exhausted) flushes the open rows."""
        data = self.dataset
        live = [
            0.0 if stream.exhausted(position) else weight
            for stream, position, weight in zip(
                data.streams, self.positions, data.weights, strict=True
            )
        ]
        self.last = sum(live) == 0
        if self.last:
            self.after = self.positions
            self.ready = self.packer.flush() if data.samples is None else []
            return
        picks = block_picks(live, data.config.seed, self.block, data.config.block_samples)
        counts = np.bincount(picks, minlength=len(data.streams)).tolist()
        taken, self.after = [], []
        for stream, position, count in zip(data.streams, self.positions, counts, strict=True):
            samples, after = stream.take(tuple(position), count)
            taken.append(iter(samples))
            self.after.append(list(after))
        samples = []
        for pick in picks:
            sample = next(taken[pick], None)  # None: the stream ran out inside the block
            if sample is not None:
                samples.append((*sample, data.streams[pick].code))
        if data.samples is not None:
            self.ready = samples
            return
        self.ready = []
        for tokens, modality, code in samples:
            self.ready += self.packer.add(tokens, modality, code)

    def get_state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "block": self.block,
            "positions": [list(position) for position in self.positions],
            "packer": self.start_packer,
            "served": self.served,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise JaxslmError(
                "the data state was saved by an older jaxslm that mixed streams per document; "
                "this one mixes per sample and cannot continue it: start a new run_dir=PATH"
            )
        self.block, self.positions = state["block"], [list(p) for p in state["positions"]]
        self.start_packer, self.served = state["packer"], state["served"]
        self.ready: list | None = None  # made on the next batch


def _pack_samples(samples: list, length: int, rows: int) -> list[dict[str, np.ndarray]]:
    """One step's samples packed first-fit into at most `rows` rows (each sample needs at
    most one row, and a step has at most `rows` samples)."""
    packer = Packer(length, open_rows=rows)
    packed = []
    for tokens, modality, code in samples:
        packed += packer.add(tokens, modality, code)
    return packed + packer.flush()


def _batch(rows: list[dict[str, np.ndarray]], size: int, length: int) -> dict[str, np.ndarray]:
    """Rows stacked into a batch of `size` rows, the missing ones padding (the last batch of
    a finite run, or a step of few samples)."""
    batch = {name: np.stack([row[name] for row in rows]) for name in rows[0]} if rows else None
    missing = size - len(rows)
    if missing == 0:
        return batch
    padding = empty_rows(missing, length)
    if batch is None:
        return padding
    return {name: np.concatenate([batch[name], padding[name]]) for name in batch}


class _ClosedAtExit(grain.experimental.ThreadPrefetchIterDataset):
    """Grain's thread prefetch, with iterators closed before the interpreter shuts down.

    Grain closes an iterator in `__del__`; for one still open at exit that runs while modules
    are torn down and prints "Exception ignored in ...". Closing them at exit instead, and
    making a second close a no-op, keeps the exit quiet.
    """

    def __iter__(self) -> grain.DatasetIterator:
        iterator = _PrefetchIterator(self._parent.__iter__(), self._prefetch_buffer_size)
        _OPEN_ITERATORS.add(iterator)
        return iterator


class _PrefetchIterator(grain.experimental.ThreadPrefetchDatasetIterator):
    """Grain's prefetch iterator whose `close` runs once."""

    def close(self) -> None:
        if not self._closed:
            super().close()


_OPEN_ITERATORS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_iterators() -> None:
    for iterator in list(_OPEN_ITERATORS):
        iterator.close()
