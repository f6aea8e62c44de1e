"""The Grain pipeline: corpus streams -> shuffled, interleaved, tokenized documents -> mixed ->
packed rows -> batches of this process's shard, with a checkpointable iterator.

Three streams, sampled by `stream_weights` (SIMS default [0.2024, 0.5433, 0.2543]):
  text         plain text documents (the tokenizer's BOS convention);
  interleaved  utterances with word alignments, cut into `<speech>`/`<text>` runs afresh every
               epoch from (seed, epoch, record);
  speech       plain units; `<S> units <S>` for speech-only vocabularies.
Each process reads records `process_index::process_count` of every stream, so processes see
disjoint documents whose union is the one-process stream, and packs its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grain
import jax
import numpy as np

from jaxslm.data.corpus import Corpus, example_to_document, example_to_utterance
from jaxslm.data.interleave import InterleaveConfig, interleave
from jaxslm.data.packing import Packer, decode_array, encode_array
from jaxslm.errors import JaxslmError
from jaxslm.text_tokenizer import TextTokenizer
from jaxslm.vocab import MARKER, SPEECH, TEXT, SpeechVocab

STREAMS = ("text", "interleaved", "speech")
SIMS_WEIGHTS = (0.2024, 0.5433, 0.2543)
Document = tuple[np.ndarray, np.ndarray]  # token ids int32, modality int8


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline produces: rows of `seq_len` next-token pairs, `batch_size` rows per
    step summed over processes."""

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


class DocumentEncoder:
    """Corpus records -> (token ids, modality) documents of one stream."""

    def __init__(
        self,
        corpus: Corpus,
        tokenizer: TextTokenizer | None,
        vocab: SpeechVocab,
        interleave_config: InterleaveConfig,
    ):
        self.corpus, self.tokenizer, self.vocab = corpus, tokenizer, vocab
        self.interleave_config = interleave_config
        self.bos = [] if tokenizer is None or tokenizer.bos_id is None else [tokenizer.bos_id]

    def text(self, example: dict[str, Any]) -> Document:
        """A text document: BOS (if the family has one) + its tokens."""
        ids = self.tokenizer.encode(example_to_document(example).text, add_special_tokens=False)
        return _document(self.bos + ids, TEXT)

    def speech(self, example: dict[str, Any]) -> Document:
        """Plain units: `<S> units <S>` (speech-only) or BOS + units (interleaved models)."""
        units = self.vocab.units_to_ids(example["units"])
        if self.vocab.mode == "speech-only":
            boundary = [self.vocab.bos_id]
            tokens = np.concatenate([boundary, units, boundary]).astype(np.int32)
            modality = np.full(tokens.size, SPEECH, np.int8)
            modality[[0, -1]] = MARKER
            return tokens, modality
        tokens = np.concatenate([self.bos, units]).astype(np.int32)
        modality = np.full(tokens.size, SPEECH, np.int8)
        modality[: len(self.bos)] = MARKER
        return tokens, modality

    def interleaved(self, example: dict[str, Any], record: int, epoch: int) -> Document | None:
        """BOS + the interleaved sequence of a word-aligned utterance (None without words)."""
        if len(example["word_texts"]) == 0:
            return None
        utterance = example_to_utterance(example, self.corpus.frame_seconds)
        encode = lambda text: self.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        tokens, modality = interleave(
            utterance, record, epoch, self.interleave_config, encode, self.vocab
        )
        return (
            np.concatenate([self.bos, tokens]).astype(np.int32),
            np.concatenate([np.full(len(self.bos), MARKER), modality]).astype(np.int8),
        )


def _document(tokens: list[int], modality: int) -> Document:
    codes = np.full(len(tokens), modality, np.int8)
    return np.asarray(tokens, np.int32), codes


def _stream(
    source, encode, config: PipelineConfig, stream_seed: int, process_index: int, count: int
) -> grain.IterDataset:
    """Records of this process, shuffled per epoch, encoded with (record, epoch) known."""
    records = grain.MapDataset.range(len(source))[process_index::count]
    local = len(records)
    if local == 0:
        raise JaxslmError(f"process {process_index} of {count} gets no records of a stream")
    records = records.shuffle(seed=config.seed + stream_seed).repeat(config.num_epochs)
    documents = records.map_with_index(
        lambda index, record: encode(source[record], record, index // local)
    )
    options = grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=64)
    return documents.to_iter_dataset(options).filter(lambda document: document is not None)


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
    encoder = DocumentEncoder(corpus, tokenizer, vocab, config.interleave)
    streams, weights = [], []
    for offset, (name, weight) in enumerate(zip(STREAMS, _weights(vocab, config), strict=True)):
        if weight <= 0:
            continue
        kind = "text" if name == "text" else "speech"
        source = corpus.source(kind, config.split)
        encode = _encode_function(encoder, name)
        streams.append(_stream(source, encode, config, 1000 * offset, index, count))
        weights.append(weight)
    mixed = streams[0] if len(streams) == 1 else grain.IterDataset.mix(streams, weights)
    packed = PackedRows(mixed, config.seq_len, config.open_rows)
    rows = config.batch_size // count
    batched = packed.batch(rows, drop_remainder=False).map(lambda batch: _pad_rows(batch, rows))
    return grain.experimental.ThreadPrefetchIterDataset(
        batched, prefetch_buffer_size=config.prefetch_batches
    )


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


def _encode_function(encoder: DocumentEncoder, stream: str):
    if stream == "text":
        return lambda example, record, epoch: encoder.text(example)
    if stream == "speech":
        return lambda example, record, epoch: encoder.speech(example)
    return encoder.interleaved


class PackedRows(grain.IterDataset):
    """Documents -> packed row dicts (see jaxslm.data.packing)."""

    def __init__(self, parent: grain.IterDataset, seq_len: int, open_rows: int):
        super().__init__(parent)
        self.seq_len, self.open_rows = seq_len, open_rows

    def __iter__(self) -> grain.DatasetIterator:
        return _PackedRowsIterator(self._parent.__iter__(), self.seq_len, self.open_rows)


class _PackedRowsIterator(grain.DatasetIterator):
    """State = parent state + open rows + completed rows not yet returned."""

    def __init__(self, parent: grain.DatasetIterator, seq_len: int, open_rows: int):
        super().__init__(parent)
        self.packer = Packer(seq_len, open_rows)
        self.ready: list[dict[str, np.ndarray]] = []
        self.exhausted = False

    def __next__(self) -> dict[str, np.ndarray]:
        while not self.ready:
            if self.exhausted:
                raise StopIteration
            try:
                self.ready.extend(self.packer.add(*next(self._parent)))
            except StopIteration:
                self.exhausted = True
                self.ready.extend(self.packer.flush())
        return self.ready.pop(0)

    def get_state(self) -> dict[str, Any]:
        return {
            "parent": self._parent.get_state(),
            "packer": self.packer.get_state(),
            "ready": [{k: encode_array(v) for k, v in row.items()} for row in self.ready],
            "exhausted": self.exhausted,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self.packer.set_state(state["packer"])
        self.ready = [{k: decode_array(v) for k, v in row.items()} for row in state["ready"]]
        self.exhausted = state["exhausted"]
