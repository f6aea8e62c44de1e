"""Corpora on disk: TFDS ArrayRecord datasets of utterances and text documents.

Layout of a corpus directory:
  corpus.json     num_units, frame_seconds, record counts, skipped records, extras
  speech/         TFDS dataset `speech_corpus` (splits train, validation): one utterance each
  text/           TFDS dataset `text_corpus`: one text document each
  columns/STREAM/SPLIT/   the same records as flat numpy arrays (jaxslm.data.columns), which
                  the pipeline memory-maps instead of decoding TFDS records one by one
  tokenizer/, eval/   optional (the built-in corpus writes both)

Built with tensorflow-datasets' GeneratorBasedBuilder (no TensorFlow needed) and read back as
random-access data sources (`Corpus.source`) or as columns (`Corpus.columns`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils
from tqdm import tqdm

from jaxslm.data.columns import (
    Columns,
    load_columns,
    save_columns,
    speech_columns,
    text_columns,
    warn_float32_times,
    widen_times,
)
from jaxslm.data.records import TextDocument, Utterance, Word
from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_directory

SPLITS = ("train", "validation")
METADATA_FILE = "corpus.json"
EVAL_DIR = "eval"  # where the built-in eval sets go unless corpus.json names `eval_dir`
EVAL_KEYS = ("eval_dir", "eval_sets")  # corpus.json's keys of the eval sets, made on demand
SPEECH_DIR, TEXT_DIR, COLUMNS_DIR = "speech", "text", "columns"

SplitRecords = Callable[[str], Iterable[Any]]


class _CorpusBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder fed by `records(split)` at build time (readers open the directory instead)."""

    def __init__(
        self, *, records: SplitRecords | None = None, splits: tuple[str, ...] = SPLITS, **kwargs
    ):
        self._records, self._splits = records, splits
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        return {split: self._examples_with_progress(split) for split in self._splits}

    def _examples_with_progress(self, split: str):
        """The split's examples under one progress bar (TFDS's own are off: `_quiet_tfds`)."""
        stream = self.name.removesuffix("_corpus")
        examples = self._generate_examples(split)
        yield from tqdm(examples, desc=f"writing {stream} {split}", unit=" records", disable=None)

    def _log_download_bytes(self) -> None:
        """Nothing: TFDS would announce a download to the staging folder."""

    def _log_download_done(self) -> None:
        """Nothing: the command names the finished corpus."""


def _float64_tensor() -> tfds.features.Tensor:
    """A float64 vector stored as raw bytes: TFDS's default encoding keeps floats in a
    tf.train.Example float list, which is float32."""
    return tfds.features.Tensor(
        shape=(None,), dtype=np.float64, encoding=tfds.features.Encoding.BYTES
    )


class SpeechCorpusBuilder(_CorpusBuilder, skip_registration=True):
    """Utterances: deduplicated units, durations and word alignments."""

    name = "speech_corpus"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict(
            {
                "id": tfds.features.Text(),
                "units": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                "durations": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                "word_texts": tfds.features.Sequence(tfds.features.Text()),
                "word_starts": _float64_tensor(),
                "word_ends": _float64_tensor(),
                "transcript": tfds.features.Text(),
                "speaker": tfds.features.Text(),
            }
        )
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _generate_examples(self, split: str):
        for utterance in self._records(split):
            yield utterance.id, utterance_to_example(utterance)


class TextCorpusBuilder(_CorpusBuilder, skip_registration=True):
    """Text documents."""

    name = "text_corpus"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict(
            {"id": tfds.features.Text(), "text": tfds.features.Text()}
        )
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _generate_examples(self, split: str):
        for document in self._records(split):
            yield document.id, {"id": document.id, "text": document.text}


def utterance_to_example(utterance: Utterance) -> dict[str, Any]:
    """TFDS example of an utterance (missing strings stored as '')."""
    words = utterance.words
    return {
        "id": utterance.id,
        "units": np.asarray(utterance.units, np.int32),
        "durations": np.asarray(utterance.durations, np.int32),
        "word_texts": [w.text for w in words],
        "word_starts": np.asarray([w.start for w in words], np.float64),
        "word_ends": np.asarray([w.end for w in words], np.float64),
        "transcript": utterance.transcript or "",
        "speaker": utterance.speaker or "",
    }


def example_to_utterance(example: dict[str, Any], frame_seconds: float) -> Utterance:
    """Inverse of `utterance_to_example` for a decoded TFDS record (float32 word times of an
    older corpus widened by `widen_times`)."""
    texts = [t.decode() if isinstance(t, bytes) else t for t in example["word_texts"]]
    starts, ends = (_float64_times(example[name]) for name in ("word_starts", "word_ends"))
    words = tuple(
        Word(text, start, end)
        for text, start, end in zip(texts, starts.tolist(), ends.tolist(), strict=True)
    )
    return Utterance(
        id=_text(example["id"]),
        units=example["units"],
        durations=example["durations"],
        frame_seconds=frame_seconds,
        words=words,
        transcript=_text(example["transcript"]) or None,
        speaker=_text(example["speaker"]) or None,
    )


def _float64_times(times: Any) -> np.ndarray:
    times = np.asarray(times)
    return widen_times(times) if times.dtype == np.float32 else times.astype(np.float64)


def example_to_document(example: dict[str, Any]) -> TextDocument:
    """Inverse of the text builder's example."""
    return TextDocument(id=_text(example["id"]), text=_text(example["text"]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def columns_from_source(source: Any, stream: str, frame_seconds: float) -> Columns:
    """Columns of a TFDS data source (`Corpus.source`): record i is record i."""
    records = (source[i] for i in range(len(source)))
    if stream == SPEECH_DIR:
        return speech_columns(example_to_utterance(r, frame_seconds) for r in records)
    return text_columns(example_to_document(r) for r in records)


def split_of(record_id: str, validation_fraction: float) -> str:
    """Deterministic split of a record by a hash of its id."""
    bucket = zlib.crc32(record_id.encode()) % 10_000
    return "validation" if bucket < validation_fraction * 10_000 else "train"


def write_corpus(
    out_dir: str | Path,
    speech: SplitRecords | None,
    text: SplitRecords | None,
    metadata: dict[str, Any],
    extras: Callable[[Path], dict[str, Any]] | None = None,
    overwrite: bool = False,
    splits: dict[str, tuple[str, ...]] | None = None,
) -> Path:
    """Write a corpus: `speech(split)` / `text(split)` yield each split's records.

    `splits` names the non-empty splits of each stream (default: both; TFDS refuses empty ones).
    `extras(staging_dir)` may add files (tokenizer, eval sets) and returns metadata entries.
    The directory appears complete or not at all.
    """
    with atomic_directory(out_dir, overwrite) as staging:
        counts = {}
        for name, records, builder_class in (
            (SPEECH_DIR, speech, SpeechCorpusBuilder),
            (TEXT_DIR, text, TextCorpusBuilder),
        ):
            if records is None:
                continue
            present = (splits or {}).get(name, SPLITS)
            builder = builder_class(
                records=records,
                splits=present,
                data_dir=str(staging / name),
                file_format="array_record",
            )
            with _quiet_tfds():
                builder.download_and_prepare()
            counts[name] = {split: builder.info.splits[split].num_examples for split in present}
        metadata = {**metadata, "counts": counts, **(extras(staging) if extras else {})}
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        staged = Corpus(staging, metadata)
        for stream, splits_present in counts.items():  # read back: TFDS reorders records
            for split in splits_present:
                columns = columns_from_source(
                    staged.source(stream, split), stream, staged.frame_seconds
                )
                save_columns(columns, staging / COLUMNS_DIR / stream / split)
    return Path(out_dir)


@contextlib.contextmanager
def _quiet_tfds():
    """TFDS's progress bars off for the block (they name the staging folder), as they were
    after it."""
    was_active = getattr(tqdm_utils, "_active", True)  # TFDS keeps the switch private
    tfds.display_progress_bar(False)
    try:
        yield
    finally:
        tfds.display_progress_bar(was_active)


@dataclass(frozen=True)
class Corpus:
    """An opened corpus directory."""

    directory: Path
    metadata: dict[str, Any]

    @property
    def num_units(self) -> int:
        return int(self.metadata["num_units"])

    @property
    def frame_seconds(self) -> float:
        return float(self.metadata["frame_seconds"])

    def check_units(self, num_units: int) -> None:
        """Refuse a vocabulary of `num_units` speech units (0: none to check) other than the
        corpus's."""
        if num_units and num_units != self.num_units:
            raise JaxslmError(
                f"data.corpus={self.directory} has {self.num_units} speech units but the "
                f"vocabulary has {num_units}: import the model with --speech-units "
                f"{self.num_units}"
            )

    def fingerprint(self) -> dict[str, str]:
        """SHA-256s of what training reads, so a resumed run can tell whether the corpus changed
        under it: `metadata` (corpus.json less the eval sets, which are made on demand),
        `tokenizer` (its files' bytes) and `records` (every other data file's path and size:
        a rebuild with other records changes sizes; reading every byte of a large corpus at
        each resume would take minutes)."""
        metadata = {k: v for k, v in self.metadata.items() if k not in EVAL_KEYS}
        tokenizer = self.path("tokenizer")
        skipped = [self.directory / METADATA_FILE, self.directory / EVAL_DIR]
        skipped += [p for p in (tokenizer, self.path("eval_dir")) if p is not None]
        return {
            "metadata": hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest(),
            "tokenizer": _files_digest(tokenizer, [], contents=True) if tokenizer else "",
            "records": _files_digest(self.directory, skipped, contents=False),
        }

    def has(self, stream: str) -> bool:
        """Whether the corpus holds `speech` or `text` records."""
        return stream in self.metadata["counts"]

    def source(self, stream: str, split: str):
        """Random-access TFDS data source of `stream` (`speech` or `text`) and `split`."""
        if not self.has(stream):
            raise JaxslmError(f"{self.directory}: the corpus has no {stream} records")
        if split not in self.metadata["counts"][stream]:
            fix = (
                "lower --validation-fraction"
                if split == "train"
                else "give --validation-fraction above 0 (or train with eval.every_steps=0)"
            )
            raise JaxslmError(
                f"{self.directory}: no {split!r} split of {stream} records; it has "
                f"{sorted(self.metadata['counts'][stream])}: rebuild the corpus and {fix}"
            )
        name = SpeechCorpusBuilder.name if stream == SPEECH_DIR else TextCorpusBuilder.name
        version_dir = self.directory / stream / name / "1.0.0"
        return tfds.builder_from_directory(str(version_dir)).as_data_source(split)

    def columns(self, stream: str, split: str) -> Columns:
        """The columnar copy of `source(stream, split)`, memory-mapped; corpora written before
        columns existed are converted in memory (rebuild them to skip that), and float32 word
        times widened to float64 (`widen_times`, with a warning)."""
        source = self.source(stream, split)
        directory = self.directory / COLUMNS_DIR / stream / split
        if directory.is_dir():
            return load_columns(directory, stream)
        if stream == SPEECH_DIR and len(source) and source[0]["word_starts"].dtype == np.float32:
            warn_float32_times(self.directory)
        return columns_from_source(source, stream, self.frame_seconds)

    def speech_tokens_per_second(self, split: str = "train") -> float:
        """Speech tokens (units, or unigram tokens) per second of audio in `split`: its tokens
        over its frames times `frame_seconds` (the `<S>` boundaries not counted)."""
        columns = self.columns(SPEECH_DIR, split)
        seconds = float(np.sum(columns["durations"], dtype=np.int64)) * self.frame_seconds
        if seconds <= 0:
            raise JaxslmError(f"{self.directory}: the {split} split holds no audio")
        return len(columns["units"]) / seconds

    def path(self, key: str) -> Path | None:
        """A file named in the metadata (e.g. `tokenizer`, `eval_dir`), or None."""
        value = self.metadata.get(key)
        return None if value is None else self.directory / value


def _files_digest(root: Path, skipped: list[Path], contents: bool) -> str:
    """SHA-256 of the files at or under `root` but not under `skipped` (hidden ones left out):
    their paths and their bytes (`contents`) or sizes."""
    digest = hashlib.sha256()
    paths = sorted(root.rglob("*")) if root.is_dir() else [root]
    for path in paths:
        name = path.relative_to(root).as_posix() if root.is_dir() else path.name
        hidden = any(part.startswith(".") for part in Path(name).parts)
        if hidden or not path.is_file() or any(path.is_relative_to(s) for s in skipped):
            continue
        digest.update(f"{name}\0".encode())
        digest.update(path.read_bytes() if contents else f"{path.stat().st_size}\0".encode())
    return digest.hexdigest()


def open_corpus(path: str | Path) -> Corpus:
    """Open a corpus directory written by `write_corpus`."""
    path = Path(path)
    metadata_file = path / METADATA_FILE
    if not metadata_file.is_file():
        raise JaxslmError(
            f"{metadata_file} not found: build a corpus with `python -m jaxslm.data.build`"
        )
    return Corpus(path, json.loads(metadata_file.read_text()))
