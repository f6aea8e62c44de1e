"""Preference corpora on disk, and how they are built (`python -m jaxslm.data.build
--preference FILE` or `--synthetic-preference`).

Layout of a preference corpus directory:
  corpus.json     "kind": "preference", num_units, pair counts per split, skipped and filtered
                  records, the source
  columns/preference/SPLIT/   per side (prompt, chosen, rejected): `<side>_units` (int32, all
                  pairs end to end) cut by `<side>_unit_offsets`, `<side>_text` (UTF-8 bytes)
                  cut by `<side>_text_offsets`, and `<side>_has_units`, `<side>_has_text`
                  (bool, a side may have either or both)

The validation split is chosen by a hash of each pair's id, as for corpora.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from jaxslm.data.corpus import COLUMNS_DIR, METADATA_FILE, SPLITS, Corpus, split_of
from jaxslm.data.ingest import SkipReport, file_labels, read_utterances
from jaxslm.data.preference import (
    SIDES,
    PreferencePair,
    RepetitionFilter,
    UnitLookup,
    read_preferences,
)
from jaxslm.data.synthetic import SyntheticConfig, SyntheticLanguage
from jaxslm.data.synthetic_preference import synthetic_pairs
from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_directory, prepare_output

KIND = "preference"
STREAM = "preference"


class PreferenceSet:
    """One split of a preference corpus, memory-mapped: the units and text of each side."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays["prompt_has_units"])

    def units(self, side: str, index: int) -> np.ndarray | None:
        """The units of `side` of pair `index` (None: the side has none)."""
        if not self.arrays[f"{side}_has_units"][index]:
            return None
        offsets = self.arrays[f"{side}_unit_offsets"]
        return self.arrays[f"{side}_units"][offsets[index] : offsets[index + 1]]

    def text(self, side: str, index: int) -> str | None:
        """The text of `side` of pair `index` (None: the side has none)."""
        if not self.arrays[f"{side}_has_text"][index]:
            return None
        offsets = self.arrays[f"{side}_text_offsets"]
        return bytes(self.arrays[f"{side}_text"][offsets[index] : offsets[index + 1]]).decode()

    def complete(self, modality: str) -> np.ndarray:
        """Boolean [pairs]: the pairs whose three sides all have `modality` (speech: units)."""
        key = "has_units" if modality == "speech" else "has_text"
        return np.logical_and.reduce([self.arrays[f"{side}_{key}"] for side in SIDES])


def preference_arrays(pairs: Iterable[PreferencePair]) -> dict[str, np.ndarray]:
    """The columns of `pairs`, in order (see the module docstring)."""
    pairs = list(pairs)
    arrays = {}
    for side in SIDES:
        pieces = [getattr(pair, side) for pair in pairs]
        units = [np.zeros(0, np.int32) if p.units is None else p.units for p in pieces]
        texts = [(p.text or "").encode() for p in pieces]
        arrays[f"{side}_units"] = np.concatenate([np.zeros(0, np.int32), *units]).astype(np.int32)
        arrays[f"{side}_unit_offsets"] = _offsets([u.size for u in units])
        arrays[f"{side}_has_units"] = np.asarray([p.units is not None for p in pieces], bool)
        arrays[f"{side}_text"] = np.frombuffer(b"".join(texts), np.uint8)
        arrays[f"{side}_text_offsets"] = _offsets([len(t) for t in texts])
        arrays[f"{side}_has_text"] = np.asarray([p.text is not None for p in pieces], bool)
    return arrays


def _offsets(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def is_preference_corpus(corpus: Corpus) -> bool:
    """Whether `corpus` holds preference pairs (not utterances and text)."""
    return corpus.metadata.get("kind") == KIND


def open_preferences(corpus: Corpus, split: str) -> PreferenceSet:
    """Split `split` of a preference corpus, memory-mapped."""
    if not is_preference_corpus(corpus):
        raise JaxslmError(
            f"data.corpus={corpus.directory} holds no preference pairs: build one with "
            "`python -m jaxslm.data.build --preference FILE.jsonl` (or --synthetic-preference)"
        )
    directory = corpus.directory / COLUMNS_DIR / STREAM / split
    if not directory.is_dir():
        present = sorted(p.name for p in directory.parent.iterdir() if p.is_dir())
        raise JaxslmError(
            f"data.corpus={corpus.directory} has no {split!r} split of preference pairs (it "
            f"has {', '.join(present) or 'none'}): set eval.split to one of them, or "
            "eval.every_steps=0"
        )
    return PreferenceSet(
        {p.stem: np.asarray(np.load(p, mmap_mode="r")) for p in sorted(directory.glob("*.npy"))}
    )


def write_preference_corpus(
    out_dir: str | Path,
    pairs: Callable[[str], Iterable[PreferencePair]],
    metadata: dict,
    overwrite: bool = False,
) -> Path:
    """Write a preference corpus from `pairs(split)`; the directory appears whole or not at
    all."""
    with atomic_directory(out_dir, overwrite) as staging:
        counts = {}
        for split in SPLITS:
            arrays = preference_arrays(pairs(split))
            counts[split] = len(arrays["prompt_has_units"])
            directory = staging / COLUMNS_DIR / STREAM / split
            directory.mkdir(parents=True)
            for name, array in arrays.items():
                np.save(directory / f"{name}.npy", array)
        metadata = {**metadata, "kind": KIND, "counts": {STREAM: counts}}
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return Path(out_dir)


def build_synthetic_preferences(
    out_dir: str | Path, config: SyntheticConfig | None = None, overwrite: bool = False
) -> Path:
    """The built-in toy language's preference set (jaxslm.data.synthetic_preference)."""
    language = SyntheticLanguage(config or SyntheticConfig())
    metadata = {
        "num_units": language.config.num_units,
        "frame_seconds": language.config.frame_seconds,
        "source": {"synthetic_preference": language.config.seed},
    }
    return write_preference_corpus(
        out_dir, lambda split: synthetic_pairs(language, split), metadata, overwrite
    )


def unit_lookup(
    files: list[Path], num_units: int, frame_seconds: float, report: SkipReport
) -> UnitLookup:
    """`units_of(path)`: the units of the audio file `path` from unit JSONL files
    (`python -m jaxslm.tokenize_audio` output, slamkit features), by `file_name`, else by
    file stem; bad unit lines go to `report`."""
    units: dict[str, list[int]] = {}
    for path in files:
        if not path.is_file():
            raise JaxslmError(f"{path}: no such unit file (--preference-units)")
        for utterance in read_utterances(path, num_units, frame_seconds, report):
            units[utterance.id] = utterance.units.tolist()
            units.setdefault(Path(utterance.id).stem, units[utterance.id])
    return lambda audio: units.get(audio, units.get(Path(audio).stem))


def build_preferences(
    out_dir: str | Path,
    files: list[Path],
    num_units: int,
    validation_fraction: float = 0.01,
    repetition: RepetitionFilter | None = None,
    units_of: UnitLookup | None = None,
    report: SkipReport | None = None,
    overwrite: bool = False,
) -> tuple[Path, SkipReport, Counter]:
    """A preference corpus from preference JSONL files: bad records are skipped and counted in
    `report` (a strict one makes the first an error naming file, line and field), pairs that
    `repetition` rejects are counted as filtered. Returns (path, skipped, filtered)."""
    for path in files:
        if not path.is_file():
            raise JaxslmError(f"{path}: no such file")
    labels = file_labels(files)
    prepare_output(out_dir, overwrite)
    report = SkipReport() if report is None else report
    filtered, seen = Counter(), set()
    by_split: dict[str, list[PreferencePair]] = {split: [] for split in SPLITS}
    for path in files:
        for number, pair in read_preferences(path, num_units, report, units_of, labels[path]):
            if pair.id in seen:
                report.skip(f"{path}:{number}", f"id: duplicate: id {pair.id!r} seen before")
                continue
            seen.add(pair.id)
            if repetition is not None and not repetition.keeps(pair):
                filtered[f"auto-BLEU-{repetition.n} >= {repetition.max_auto_bleu}"] += 1
                continue
            by_split[split_of(pair.id, validation_fraction)].append(pair)
    if not by_split["train"]:
        raise _no_training_pairs(files, report, filtered)
    metadata = {
        "num_units": num_units,
        "source": {"preference": [str(p) for p in files]},
        "skipped": report.counts,
        "filtered": filtered,
    }
    path = write_preference_corpus(out_dir, by_split.__getitem__, metadata, overwrite)
    return path, report, filtered


def _no_training_pairs(files: list[Path], report: SkipReport, filtered: Counter) -> JaxslmError:
    names = ", ".join(str(path) for path in files)
    lost = report.counts + filtered
    if not lost:
        return JaxslmError(f"{names}: no training pairs (empty, or every pair went to validation)")
    kinds = ", ".join(f"{count} {kind}" for kind, count in lost.most_common())
    first = f"; first: {next(iter(report.first_seen.values()))}" if report.first_seen else ""
    return JaxslmError(f"{names}: no training pairs left ({kinds}){first}")
