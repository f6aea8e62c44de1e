"""`python -m jaxslm.data.unit_pieces`: unigram-compressed speech tokens (the coarser
tokenization of Cuervo & Marxer's scaling paper; jaxslm.speech.unit_pieces).

    python -m jaxslm.data.unit_pieces corpus --corpus data/toy --vocab-size 300 \\
        --out data/toy_pieces
    python -m jaxslm.data.unit_pieces encode --model data/toy_pieces/unit_pieces \\
        --units bench.units.jsonl --out bench.pieces.jsonl

`corpus` trains a unigram model of --vocab-size speech tokens over the deduplicated unit
sequences of a corpus's train split and writes a corpus whose utterances are those tokens: each
token lasts the frames of its units (so audio seconds and word times are unchanged), the text
stream and text tokenizer are copied, the model is stored under `unit_pieces/`, and unit JSONL
eval sets (`eval/`) are encoded with it. Train on it with `vocab.mode=speech-only`: the
corpus's `num_units` is its token count. `encode` rewrites a units JSONL (`{file_name, units,
duration}`, as `python -m jaxslm.tokenize_audio` writes) with tokens for `units` and summed
frames for `duration`, for `python -m jaxslm.evaluate --units` and `generate --prompt-units`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from jaxslm.cli_help import HelpFormatter
from jaxslm.data.corpus import (
    SPEECH_DIR,
    TEXT_DIR,
    example_to_document,
    example_to_utterance,
    open_corpus,
    write_corpus,
)
from jaxslm.data.records import Utterance
from jaxslm.errors import JaxslmError
from jaxslm.evals.items import units_list
from jaxslm.fsutil import atomic_write_text, prepare_output, prepare_output_file
from jaxslm.speech.unit_pieces import UnitPieces, train_unit_pieces
from jaxslm.textfiles import read_utf8

MODEL_DIR = "unit_pieces"


def build_piece_corpus(
    corpus_dir: str | Path,
    vocab_size: int,
    out_dir: str | Path,
    overwrite: bool = False,
    max_sequences: int | None = None,
) -> Path:
    """A corpus of unigram speech tokens from a unit corpus (see the module docstring); the
    model trains on the first `max_sequences` train utterances (None: all)."""
    source = open_corpus(corpus_dir)
    if not source.has(SPEECH_DIR):
        raise JaxslmError(f"--corpus {corpus_dir}: the corpus has no speech records to compress")
    if max_sequences is not None and max_sequences < 1:
        raise JaxslmError(f"--max-sequences {max_sequences}: must be at least 1")
    prepare_output(out_dir, overwrite)
    counts = source.metadata["counts"]

    def records(stream: str, split: str) -> Iterator:
        data = source.source(stream, split)
        for index in range(len(data)):
            if stream == SPEECH_DIR:
                yield example_to_utterance(data[index], source.frame_seconds)
            else:
                yield example_to_document(data[index])

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(scratch) / MODEL_DIR
        utterances = itertools.islice(records(SPEECH_DIR, "train"), max_sequences)
        train = (u.units for u in utterances)
        pieces = train_unit_pieces(train, source.num_units, vocab_size, model_dir)

        def speech(split: str) -> Iterator[Utterance]:
            for utterance in records(SPEECH_DIR, split):
                tokens, frames = pieces.encode_with_durations(utterance.units, utterance.durations)
                yield replace(utterance, units=tokens, durations=frames)

        def extras(staging: Path) -> dict:
            shutil.copytree(model_dir, staging / MODEL_DIR)
            added = {"unit_pieces": MODEL_DIR}
            tokenizer = source.path("tokenizer")
            if tokenizer is not None:
                relative = tokenizer.relative_to(source.directory)
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(tokenizer, staging / relative)
                added["tokenizer"] = str(relative)
            eval_dir = source.path("eval_dir")
            if eval_dir is not None and eval_dir.is_dir():
                (staging / "eval").mkdir()
                for path in sorted(eval_dir.glob("*.jsonl")):
                    encode_units_file(pieces, path, staging / "eval" / path.name)
                added["eval_dir"] = "eval"
            return added

        metadata = {
            "num_units": pieces.num_tokens,
            "frame_seconds": source.frame_seconds,
            "source": {
                "unit_pieces": {
                    "corpus": str(corpus_dir),
                    "vocab_size": vocab_size,
                    "num_units": source.num_units,
                }
            },
        }
        return write_corpus(
            out_dir,
            speech=lambda split: speech(split),
            text=(lambda split: records(TEXT_DIR, split)) if source.has(TEXT_DIR) else None,
            metadata=metadata,
            extras=extras,
            overwrite=overwrite,
            splits={stream: tuple(splits) for stream, splits in counts.items()},
        )


def encode_units_file(pieces: UnitPieces, path: Path, out: Path) -> Path:
    """A units JSONL with every `units` list encoded to speech tokens and its `duration` list
    (if any) summed per token; lines without units are copied."""
    lines = []
    for number, line in enumerate(read_utf8(path, "units JSONL").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise JaxslmError(f"{path}:{number}: not JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise JaxslmError(f"{path}:{number}: not a JSON object with 'file_name' and 'units'")
        if "units" in record:
            units = units_list(record["units"], f"{path}:{number}")
            frames = record.get("duration") or [1] * len(units)
            if len(frames) != len(units):
                raise JaxslmError(
                    f"{path}:{number}: 'duration' has {len(frames)} values for "
                    f"{len(units)} units; give one frame count per unit"
                )
            try:
                tokens, frames = pieces.encode_with_durations(units, frames)
            except JaxslmError as err:
                raise JaxslmError(f"{path}:{number}: {err}") from None
            record["units"] = tokens.tolist()
            if "duration" in record:
                record["duration"] = frames.tolist()
        lines.append(json.dumps(record) + "\n")
    return atomic_write_text(out, "".join(lines))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxslm.data.unit_pieces",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    corpus = commands.add_parser(
        "corpus",
        help="train a unigram model and write a token corpus",
        formatter_class=HelpFormatter,
    )
    corpus.add_argument("--corpus", required=True, type=Path, help="unit corpus to compress")
    corpus.add_argument(
        "--vocab-size", required=True, type=int, help="speech tokens, units included"
    )
    corpus.add_argument("--out", required=True, type=Path, help="the token corpus to write")
    corpus.add_argument(
        "--max-sequences",
        type=int,
        help="train the model on the first N train utterances (default all; SentencePiece "
        "holds them in memory)",
    )
    corpus.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    encode = commands.add_parser(
        "encode", help="encode a units JSONL with a trained model", formatter_class=HelpFormatter
    )
    encode.add_argument("--model", required=True, type=Path, help="a unit_pieces/ directory")
    encode.add_argument("--units", required=True, type=Path, help="units JSONL to encode")
    encode.add_argument("--out", required=True, type=Path, help="the token JSONL to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "corpus":
            path = build_piece_corpus(
                args.corpus, args.vocab_size, args.out, args.overwrite, args.max_sequences
            )
        else:
            if not args.units.is_file():
                raise JaxslmError(f"--units {args.units}: no such file")
            prepare_output_file(args.out)
            path = encode_units_file(UnitPieces.load(args.model), args.units, args.out)
    except JaxslmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
