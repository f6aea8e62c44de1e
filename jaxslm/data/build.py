"""`python -m jaxslm.data.build`: build a corpus from slamkit-style files or the built-in
toy language.

    python -m jaxslm.data.build --synthetic --out data/toy
    python -m jaxslm.data.build --units feats.jsonl --alignments align.json \\
        --text books.txt --num-units 500 --out data/my_corpus

Preference corpora (for `objective: dpo`), from (prompt, chosen, rejected) JSONL:

    python -m jaxslm.data.build --synthetic-preference --out data/toy_preference
    python -m jaxslm.data.build --preference pairs.jsonl --repetition-filter \\
        --num-units 500 --out data/my_preferences
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from jaxslm.cli_help import HelpFormatter
from jaxslm.data.corpus import SPLITS, split_of, write_corpus
from jaxslm.data.ingest import (
    SkipReport,
    file_labels,
    read_alignments,
    read_text_documents,
    read_utterances,
)
from jaxslm.data.records import TextDocument, Utterance
from jaxslm.data.synthetic_corpus import build_synthetic
from jaxslm.data.units_cache import check_units_cache, tokenizer_stamp
from jaxslm.errors import JaxslmError
from jaxslm.fsutil import prepare_output
from jaxslm.speech.tokenizer_args import add_tokenizer_args, tokenizer_from_args


def build_from_files(
    out_dir: str | Path,
    units: list[Path],
    alignments: list[Path],
    texts: list[Path],
    num_units: int,
    frame_seconds: float,
    validation_fraction: float = 0.01,
    strict: bool = False,
    overwrite: bool = False,
) -> tuple[Path, SkipReport]:
    """A corpus from unit JSONL files (+ alignment JSON) and text files; bad records are
    skipped and counted (`strict`: the first one is an error naming file, line and field)."""
    check_settings(num_units, frame_seconds, validation_fraction)
    for path in [*units, *alignments, *texts]:
        if not path.is_file():
            raise JaxslmError(f"{path}: no such file")
    if not units and not texts:
        raise JaxslmError("nothing to build: give --units and/or --text files (or --synthetic)")
    labels = file_labels(texts)
    prepare_output(out_dir, overwrite)
    words = {}
    for path in alignments:
        words.update(read_alignments(path))
    report = SkipReport(strict=strict)
    unaligned: list[str] = []  # kept utterances without words (first pass)

    def speech(split: str | None) -> Iterator[Utterance]:
        """The utterances of `split` (None: all); bad records are counted in the first pass."""
        seen: set[str] = set()
        counted = report if split is None else SkipReport()
        for path in units:
            for utterance in read_utterances(path, num_units, frame_seconds, counted, words):
                if utterance.id in seen:
                    counted.skip(
                        f"{path}: {utterance.id}",
                        f"id: duplicate: file_name {utterance.id!r} seen before",
                    )
                    continue
                seen.add(utterance.id)
                if split is None and not utterance.words:
                    unaligned.append(utterance.id)
                if split in (None, split_of(utterance.id, validation_fraction)):
                    yield utterance

    def text(split: str | None) -> Iterator[TextDocument]:
        counted = report if split is None else SkipReport()
        for path in texts:
            for document in read_text_documents(path, counted, labels[path]):
                if split in (None, split_of(document.id, validation_fraction)):
                    yield document

    def present_splits(paths: list[Path], ids: Iterable[str]) -> tuple[str, ...]:
        before = Counter(report.counts)
        found = {split_of(record_id, validation_fraction) for record_id in ids}
        if not found:
            raise _nothing_valid(paths, report.counts - before, report.first_seen)
        return tuple(split for split in SPLITS if split in found)

    splits = {}  # TFDS refuses empty splits: find the present ones first (strict fails here)
    if units:
        splits["speech"] = present_splits(units, (u.id for u in speech(None)))
        if unaligned and alignments:
            report.notes.append(_unaligned_note(unaligned, alignments))
    if texts:
        splits["text"] = present_splits(texts, (d.id for d in text(None)))
    metadata = {
        "num_units": num_units,
        "frame_seconds": frame_seconds,
        "source": {
            "units": [str(p) for p in units],
            "alignments": [str(p) for p in alignments],
            "text": [str(p) for p in texts],
        },
        "skipped": report.counts,
    }
    path = write_corpus(
        out_dir,
        speech if units else None,
        text if texts else None,
        metadata,
        overwrite=overwrite,
        splits=splits,
    )
    return path, report


def _unaligned_note(names: list[str], alignments: list[Path]) -> str:
    """Which utterances the alignment files miss, and what that means for training."""
    return (
        f"{len(names)} utterances (first: {names[0]}) have no entry in "
        f"{', '.join(str(p) for p in alignments)} (keys: file_name or its stem); they serve "
        "the speech stream only, never the interleaved one"
    )


def check_settings(num_units: int, frame_seconds: float, validation_fraction: float) -> None:
    """Refuse settings that would build a corpus no pipeline can use."""
    if num_units < 1:
        raise JaxslmError(f"--num-units {num_units}: the speech vocabulary needs at least 1 unit")
    if not (math.isfinite(frame_seconds) and frame_seconds > 0):
        raise JaxslmError(
            f"--frame-seconds {frame_seconds}: must be a positive number of seconds per frame "
            "(0.04 for 25 Hz units, 0.02 for 50 Hz)"
        )
    if not 0 <= validation_fraction < 1:
        raise JaxslmError(
            f"--validation-fraction {validation_fraction}: must be in [0, 1), the share of "
            "records held out for validation (default 0.01)"
        )


def _nothing_valid(paths: list[Path], skipped: Counter, first_seen: dict[str, str]) -> JaxslmError:
    """The error for input files without one valid record: empty, or every record skipped."""
    names = ", ".join(str(path) for path in paths)
    if not skipped:
        return JaxslmError(f"{names}: no records at all (empty or blank lines only)")
    kinds = ", ".join(f"{count} {kind}" for kind, count in skipped.most_common())
    top = skipped.most_common(1)[0][0]
    return JaxslmError(
        f"{names}: no valid records, all {sum(skipped.values())} were skipped ({kinds}); "
        f"first: {first_seen[top]}"
    )


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the corpus builder."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxslm.data.build",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--out", required=True, help="corpus directory to create")
    parser.add_argument(
        "--synthetic", action="store_true", help="build the built-in toy corpus (no input files)"
    )
    _add_file_list(
        parser,
        "--units",
        "JSONL",
        "unit files: lines {file_name, units, duration} (slamkit features "
        "or jaxslm.tokenize_audio output), optionally with aligned_text",
    )
    parser.add_argument(
        "--audio",
        type=Path,
        help="audio file, folder or list file: tokenized with --hubert/--layer/--codebook into "
        "OUT.units.jsonl (resumable, kept beside OUT) and built like --units; with "
        "--preference, used like --preference-units",
    )
    add_tokenizer_args(parser, required=False, purpose="for --audio")
    _add_file_list(
        parser, "--alignments", "JSON", "slamkit alignment JSON {file: [{word, start, end}, ...]}"
    )
    _add_file_list(
        parser, "--text", "FILE", "text corpora: .txt (one document per line) or .jsonl ('text')"
    )
    parser.add_argument(
        "--num-units",
        type=int,
        default=500,
        help="speech vocabulary size K; units outside [0, K) are skipped",
    )
    parser.add_argument(
        "--frame-seconds",
        type=float,
        default=0.04,
        help="seconds per frame of the unit files (0.04 for 25 Hz, 0.02 50 Hz)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.01,
        help="share of records (by hash of their id) in the validation split",
    )
    _add_file_list(
        parser,
        "--preference",
        "JSONL",
        "preference files: lines {prompt, chosen, rejected}, each side {units, duration} "
        "(slamkit's preference features), a unit list or a text, with optional "
        "<side>_text, <side>_path and id (builds a preference corpus, for objective: dpo)",
    )
    parser.add_argument(
        "--synthetic-preference",
        action="store_true",
        help="build the built-in toy language's preference set (no input files)",
    )
    _add_file_list(
        parser,
        "--preference-units",
        "JSONL",
        "unit files giving the units of preference sides that name only <side>_path "
        "(jaxslm.tokenize_audio output: matched by file_name, then by file stem)",
    )
    parser.add_argument(
        "--repetition-filter",
        action="store_true",
        help="drop pairs whose prompt + chosen text has auto-BLEU >= --max-auto-bleu (slamkit)",
    )
    parser.add_argument(
        "--auto-bleu-n", type=int, default=2, help="n-gram length of the repetition filter"
    )
    parser.add_argument(
        "--max-auto-bleu", type=float, default=0.3, help="threshold of the repetition filter"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad record instead of skipping and counting",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def _add_file_list(parser: argparse.ArgumentParser, flag: str, metavar: str, help: str) -> None:
    """An option that takes any number of input files (default none)."""
    parser.add_argument(flag, nargs="*", type=Path, default=[], metavar=metavar, help=help)


def _tokenize_audio_input(args: argparse.Namespace) -> None:
    """Tokenize --audio into OUT.units.jsonl and build from it, with the tokenizer's K and
    frame length (replacing --num-units and --frame-seconds)."""
    from jaxslm.tokenize_audio import list_audio, tokenize_files

    if args.hubert is None or args.codebook is None:
        raise JaxslmError("--audio needs --hubert and --codebook (and --layer, default 11)")
    entries = list_audio(args.audio)
    out = Path(args.out)
    units_path = out.with_name(out.name + ".units.jsonl")
    stamp = tokenizer_stamp(args.hubert, args.layer, args.codebook, args.final_norm)
    check_units_cache(units_path, stamp)
    tokenizer = tokenizer_from_args(args)
    args.num_units, args.frame_seconds = tokenizer.num_units, tokenizer.frame_seconds
    tokenize_files(entries, tokenizer, units_path)
    args.units = [*args.units, units_path]


def _build_preference_corpus(args: argparse.Namespace) -> int:
    """The preference corpus of --synthetic-preference or --preference files."""
    from jaxslm.data.preference import RepetitionFilter
    from jaxslm.data.preference_store import (
        build_preferences,
        build_synthetic_preferences,
        unit_lookup,
    )

    if args.synthetic_preference:
        path = build_synthetic_preferences(args.out, overwrite=args.overwrite)
        print(f"wrote the built-in preference set to {path}")
        return 0
    unit_files = list(args.preference_units)
    if args.audio is not None:
        prepare_output(args.out, args.overwrite)
        _tokenize_audio_input(args)
        unit_files.append(args.units[-1])
    check_settings(args.num_units, args.frame_seconds, args.validation_fraction)
    report = SkipReport(strict=args.strict)
    units_of = None
    if unit_files:
        units_of = unit_lookup(unit_files, args.num_units, args.frame_seconds, report)
    repetition = None
    if args.repetition_filter:
        repetition = RepetitionFilter(args.auto_bleu_n, args.max_auto_bleu)
    path, report, filtered = build_preferences(
        args.out,
        args.preference,
        args.num_units,
        args.validation_fraction,
        repetition,
        units_of,
        report,
        args.overwrite,
    )
    print(report.summary())
    for reason, count in filtered.items():
        print(f"filtered {count} pairs: {reason}")
    print(f"wrote {path}")
    return 0


def _refuse_inputs_with_synthetic(args: argparse.Namespace) -> None:
    """The built-in corpora take no input files: refuse input flags given with them (they
    would be ignored), and both built-in corpora at once."""
    if args.synthetic and args.synthetic_preference:
        raise JaxslmError(
            "--synthetic and --synthetic-preference build different corpora; give one of them"
        )
    if not (args.synthetic or args.synthetic_preference):
        return
    synthetic = "--synthetic" if args.synthetic else "--synthetic-preference"
    given = [
        flag
        for flag, value in (
            ("--units", args.units),
            ("--text", args.text),
            ("--alignments", args.alignments),
            ("--audio", args.audio),
            ("--preference", args.preference),
            ("--preference-units", args.preference_units),
        )
        if value
    ]
    if given:
        raise JaxslmError(
            f"{synthetic} builds a built-in toy corpus and reads no input files, but "
            f"{', '.join(given)} {'was' if len(given) == 1 else 'were'} given; drop "
            f"{synthetic} to build from the files, or drop the files"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the builder; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        _refuse_inputs_with_synthetic(args)
        if args.synthetic:
            path = build_synthetic(args.out, overwrite=args.overwrite)
            print(f"wrote the built-in corpus to {path}")
            return 0
        if args.synthetic_preference or args.preference:
            return _build_preference_corpus(args)
        if args.audio is not None:
            prepare_output(args.out, args.overwrite)
            _tokenize_audio_input(args)
        path, report = build_from_files(
            Path(args.out),
            args.units,
            args.alignments,
            args.text,
            args.num_units,
            args.frame_seconds,
            args.validation_fraction,
            args.strict,
            args.overwrite,
        )
    except JaxslmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from jaxslm.cli_warnings import plain_jaxslm_warnings

    plain_jaxslm_warnings()
    sys.exit(main())
