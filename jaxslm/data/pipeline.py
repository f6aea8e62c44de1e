"""The Grain pipeline: corpus streams -> shuffled, interleaved, tokenized documents -> mixed ->
packed rows -> batches of this process's shard, with a checkpointable iterator.

Three streams, sampled by `stream_weights` (SIMS default [0.2024, 0.5433, 0.2543]):
  text         plain text documents (the tokenizer's BOS convention);
  interleaved  utterances with word alignments, cut into `<speech>`/`<text>` runs afresh every
               epoch from (seed, epoch, record);
  speech       plain units; `<S> units <S>` for speech-only vocabularies.
Each process reads records `process_index::process_count` of every stream, so processes see
disjoint documents whose union is the one-process stream, and packs its own rows.

Documents are made `chunk_documents` at a time (jaxslm.data.schedule picks them,
jaxslm.data.encode encodes them from the corpus's columnar copy, jaxslm.data.packing packs
them) inside one Grain dataset, `PackedBatches`, behind Grain's thread prefetch. Its state is
where the current chunk started (chunk number, stream positions, open rows) and how many of
the chunk's rows were served: a restored iterator re-encodes that chunk and goes on exactly.
"""

from __future__ import annotations

import atexit
import weakref
from dataclasses import dataclass, field
from typing import Any

import grain
import jax
import numpy as np

from jaxslm.data.corpus import Corpus
from jaxslm.data.encode import ChunkEncoder
from jaxslm.data.interleave import InterleaveConfig
from jaxslm.data.packing import Packer
from jaxslm.data.schedule import StreamOrder, plan_chunk
from jaxslm.errors import JaxslmError
from jaxslm.text_tokenizer import TextTokenizer
from jaxslm.vocab import SpeechVocab

STREAMS = ("text", "interleaved", "speech")
SIMS_WEIGHTS = (0.2024, 0.5433, 0.2543)


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline produces: rows of `seq_len` next-token pairs, `batch_size` rows per
    step summed over processes.

    `open_rows`: partly filled rows the packer keeps; `chunk_documents`: documents encoded
    together; `read_threads`: threads of the batched text tokenizer (SentencePiece);
    `prefetch_batches`: batches made ahead in a background thread (0: none).
    """

    seq_len: int = 1024
    batch_size: int = 8
    stream_weights: tuple[float, float, float] = SIMS_WEIGHTS
    interleave: InterleaveConfig = field(default_factory=InterleaveConfig)
    seed: int = 0
    num_epochs: int | None = None
    split: str = "train"
    open_rows: int = 8
    read_threads: int = 2
    prefetch_batches: int = 2
    chunk_documents: int = 256


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
    if config.batch_size % count:
        raise JaxslmError(
            f"batch_size {config.batch_size} is not divisible by the {count} processes"
        )
    if vocab.num_units and vocab.num_units != corpus.num_units:
        raise JaxslmError(
            f"{corpus.directory}: corpus has {corpus.num_units} units, the model vocabulary "
            f"{vocab.num_units}"
        )
    weights = _weights(vocab, config)
    codes = [code for code, weight in enumerate(weights) if weight > 0]
    kinds = {"speech": any(weights[1:]), "text": weights[0] > 0}
    columns = {k: corpus.columns(k, config.split) if on else None for k, on in kinds.items()}
    encoder = ChunkEncoder(
        columns["speech"],
        columns["text"],
        corpus.frame_seconds,
        tokenizer,
        vocab,
        config.interleave,
        config.read_threads,
    )
    orders = []
    for code in codes:
        size = len(columns["text" if code == 0 else "speech"])
        orders.append(StreamOrder(size, config.seed, code, index, count, config.num_epochs))
    batches = PackedBatches(
        encoder, orders, codes, [weights[c] for c in codes], config, config.batch_size // count
    )
    if config.prefetch_batches <= 0:
        return batches
    return _ClosedAtExit(batches, prefetch_buffer_size=config.prefetch_batches)


def _pad_rows(batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """The last batch of a finite run, padded with empty rows to the usual shape."""
    missing = rows - len(batch["tokens"])
    if missing == 0:
        return batch
    return {
        k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)]) for k, v in batch.items()
    }


def _weights(vocab: SpeechVocab, config: PipelineConfig) -> tuple[float, float, float]:
    """Stream weights allowed by the vocabulary (speech-only: speech; text: text)."""
    if vocab.mode == "speech-only":
        return (0.0, 0.0, 1.0)
    if vocab.mode == "text":
        return (1.0, 0.0, 0.0)
    weights = tuple(float(w) for w in config.stream_weights)
    if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
        raise JaxslmError(
            f"stream_weights {config.stream_weights}: give three non-negative weights for {STREAMS}"
        )
    return weights


class PackedBatches(grain.IterDataset):
    """Batches of packed rows from the mixed streams, made a chunk of documents at a time."""

    def __init__(
        self,
        encoder: ChunkEncoder,
        orders: list[StreamOrder],
        codes: list[int],
        weights: list[float],
        config: PipelineConfig,
        rows: int,
    ):
        super().__init__()
        self.encoder, self.orders, self.codes, self.weights = encoder, orders, codes, weights
        self.config, self.rows = config, rows

    def __iter__(self) -> grain.DatasetIterator:
        return _PackedBatchesIterator(self)


class _PackedBatchesIterator(grain.DatasetIterator):
    """State: the current chunk's number, the stream positions and the open rows where it
    started, and how many of its rows were served."""

    def __init__(self, dataset: PackedBatches):
        super().__init__()
        self.dataset = dataset
        self.packer = Packer(dataset.config.seq_len, dataset.config.open_rows)
        self.set_state(
            {
                "chunk": 0,
                "positions": [0] * len(dataset.orders),
                "packer": {"rows": []},
                "served": 0,
            }
        )

    def __next__(self) -> dict[str, np.ndarray]:
        rows = []
        while len(rows) < self.dataset.rows:
            if self.ready is None:
                self.packer.set_state(self.start_packer)
                self._make_chunk()
            if self.served < len(self.ready):
                take = self.ready[self.served : self.served + self.dataset.rows - len(rows)]
                rows += take
                self.served += len(take)
            elif self.last:
                break
            else:
                self.chunk, self.positions, self.served = self.chunk + 1, self.after, 0
                self.start_packer = self.packer.get_state()
                self._make_chunk()
        if not rows:
            raise StopIteration
        return _batch(rows, self.dataset.rows)

    def _make_chunk(self) -> None:
        """Encode and pack the current chunk (with the packer where the chunk starts)."""
        data = self.dataset
        documents, self.after = plan_chunk(
            data.orders,
            data.codes,
            data.weights,
            data.config.seed,
            self.chunk,
            self.positions,
            data.config.chunk_documents,
        )
        self.last = not documents
        if self.last:
            self.ready = self.packer.flush()
            return
        chunk = data.encoder.encode(documents)
        tokens, modality, offsets = chunk.tokens, chunk.modality, chunk.offsets.tolist()
        self.ready = []
        for a, b in zip(offsets[:-1], offsets[1:], strict=True):
            self.ready += self.packer.add(tokens[a:b], modality[a:b])

    def get_state(self) -> dict[str, Any]:
        return {
            "chunk": self.chunk,
            "positions": list(self.positions),
            "packer": self.start_packer,
            "served": self.served,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.chunk, self.positions = state["chunk"], list(state["positions"])
        self.start_packer, self.served = state["packer"], state["served"]
        self.ready: list[dict[str, np.ndarray]] | None = None  # made on the next batch


def _batch(rows: list[dict[str, np.ndarray]], size: int) -> dict[str, np.ndarray]:
    """Rows stacked into a batch; the last batch of a finite run is padded with empty rows."""
    batch = {name: np.stack([row[name] for row in rows]) for name in rows[0]}
    return _pad_rows(batch, size)


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
