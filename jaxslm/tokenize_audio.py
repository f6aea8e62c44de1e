"""`python -m jaxslm.tokenize_audio`: audio files -> deduplicated HuBERT units (JSONL).

  python -m jaxslm.tokenize_audio --audio wavs/ --hubert mhubert-base-25hz --layer 11 \\
      --codebook km500.npy --out units.jsonl

Each output line is `{"file_name", "units", "duration"}` as slamkit's feature files: the
deduplicated units and the frames each lasted (one frame is the HuBERT model's frame:
0.04 s for mHuBERT-25Hz, 0.02 s for 50 Hz models). `file_name` is the path relative to
--audio (a folder), as written in the list (a text file with one path per line), or the
file's name (a single audio file).

Files are tokenized in order of length, as slamkit does, in padded batches. Lines go to
OUT.partial as batches finish, and OUT.partial replaces OUT in one rename at the end. A file
that cannot be read goes to <OUT stem>.errors.jsonl with the reason, and the run goes on.
Running the same command again tokenizes only the listed files not in OUT or OUT.partial (the
failures of earlier runs and new files), keeps every line already there, and replaces OUT,
whole, at the end; an interrupted run resumes the same way. A file already in OUT is never
tokenized again: delete OUT to start over. The textless k-means `.bin` is a pickle and is read
only with --trust-pickle.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from jaxslm.cli_help import HelpFormatter
from jaxslm.errors import JaxslmError
from jaxslm.speech.tokenizer_args import add_tokenizer_args, tokenizer_from_args
from jaxslm.textfiles import read_utf8

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
# tqdm's default layout with the seconds shown to a tenth (their float sums carry noise)
PROGRESS_FORMAT = "{l_bar}{bar}| {n:.1f}/{total:.1f} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxslm.tokenize_audio",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--audio",
        required=True,
        type=Path,
        help=f"an audio file ({', '.join(AUDIO_SUFFIXES)}), a folder of them (searched "
        "recursively) or a list file (one path per line)",
    )
    add_tokenizer_args(parser, required=True)
    parser.add_argument("--out", required=True, type=Path, help="output JSONL")
    parser.add_argument(
        "--no-dedup", action="store_true", help="one unit per frame (durations all 1)"
    )
    parser.add_argument(
        "--trim-silence", action="store_true", help="cut leading and trailing silence first"
    )
    parser.add_argument(
        "--batch-seconds", type=float, default=120.0, help="seconds of audio per batch"
    )
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default="float32", help="HuBERT compute dtype"
    )
    parser.add_argument(
        "--convention",
        choices=("slamkit", "cuervo-marxer"),
        default="slamkit",
        help="unit extraction: slamkit's (40 zero samples each side, each file whole) "
        "or Cuervo & Marxer's slm-data encode (no padding, 30 s chunks)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def list_audio(source: Path) -> list[tuple[str, Path]]:
    """(file_name, path) of one audio file (its name), of every audio file of a folder, or of
    every line of a list file."""
    if source.is_file() and source.suffix.lower() in AUDIO_SUFFIXES:
        return [(source.name, source)]
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        entries = [(p.relative_to(source).as_posix(), p) for p in files if p.is_file()]
    elif source.is_file():
        lines = [line.strip() for line in read_utf8(source, "list of audio files").splitlines()]
        entries = [(line, _listed_path(source, line)) for line in lines if line]
    else:
        raise JaxslmError(f"--audio {source}: no such audio file, folder or list file")
    if not entries:
        raise JaxslmError(f"--audio {source}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return entries


def _listed_path(list_file: Path, line: str) -> Path:
    path = Path(line)
    return path if path.is_absolute() else list_file.parent / path


def tokenize(args: argparse.Namespace) -> dict[str, int]:
    """Tokenize every listed file not yet in --out; returns counts."""
    from jaxslm.backend import hubert_bucket_seconds
    from jaxslm.fsutil import prepare_output_file
    from jaxslm.speech.tokenizer import SpeechTokenizer

    if not args.batch_seconds > 0:
        raise JaxslmError(f"--batch-seconds must be positive, got {args.batch_seconds:g}")
    if args.batch_seconds < (bucket := hubert_bucket_seconds()):
        raise JaxslmError(
            f"--batch-seconds {args.batch_seconds:g}: must be at least {bucket:g}, the shortest "
            "HuBERT batch on this device (JAXSLM_HUBERT_BUCKET_SECONDS)"
        )
    entries = list_audio(args.audio)
    prepare_output_file(args.out)

    def load_tokenizer() -> SpeechTokenizer:
        return tokenizer_from_args(
            args,
            deduplicate=not args.no_dedup,
            batch_seconds=args.batch_seconds,
            dtype=args.dtype,
            convention=args.convention,
        )

    return tokenize_pending(
        entries,
        load_tokenizer,
        args.out,
        args.batch_seconds,
        args.trim_silence,
        not args.no_progress,
    )


def tokenize_files(
    entries: list[tuple[str, Path]],
    tokenizer,
    out_path: Path,
    batch_seconds: float = 120.0,
    trim_silence: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """`tokenize_pending` with a loaded tokenizer."""
    return tokenize_pending(
        entries, lambda: tokenizer, out_path, batch_seconds, trim_silence, progress
    )


def tokenize_pending(
    entries: list[tuple[str, Path]],
    load_tokenizer: Callable[[], Any],
    out_path: Path,
    batch_seconds: float = 120.0,
    trim_silence: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Add `{file_name, units, duration}` lines to `out_path` for the `entries` (from
    `list_audio`) not in it yet: new files and those that failed before. Resumes from
    `out_path.partial`, keeps the lines already in `out_path`, and replaces it in one rename;
    this run's failures go to `<stem>.errors.jsonl`. `load_tokenizer` is called before
    anything is written (or a folder made) on a first run, when every file is to be tokenized,
    and on a later run only when a file is left to tokenize."""
    from jaxslm.resumable_jsonl import ResumableJsonl, report_errors, started
    from jaxslm.speech.audio import audio_seconds

    errors_path = out_path.with_name(out_path.stem + ".errors.jsonl")
    tokenizer = None if started(out_path) else load_tokenizer()
    with ResumableJsonl(out_path) as output:
        todo, errors = [], []
        for name, path in entries:
            if name in output.done:
                continue
            try:
                todo.append((audio_seconds(path), name, path))
            except JaxslmError as error:
                errors.append({"file_name": name, "error": str(error)})
        pending = len(todo) + len(errors)
        written = 0
        if todo:
            if tokenizer is None:
                tokenizer = load_tokenizer()
            written = _tokenize_into(
                output, sorted(todo), tokenizer, batch_seconds, trim_silence, progress, errors
            )
        report_errors(errors_path, errors, "file(s) failed")
        output.commit()
    return {
        "files": len(entries),
        "done_before": len(entries) - pending,
        "tokenized": written,
        "errors": len(errors),
    }


def _tokenize_into(
    output, todo, tokenizer, batch_seconds: float, trim: bool, progress: bool, errors: list
) -> int:
    """Append the lines of `todo` (seconds, name, path), shortest first, to `output`; adds
    failures to `errors`; returns the lines written."""
    from tqdm import tqdm

    bar = tqdm(
        total=sum(t[0] for t in todo),
        unit="s",
        desc="audio",
        bar_format=PROGRESS_FORMAT,
        disable=not progress,
    )
    written = 0
    with bar:
        for batch, waves, failed in _loaded_batches(todo, batch_seconds, trim):
            errors += [{"file_name": f["file_name"], "error": f["error"]} for f in failed]
            results = tokenizer.units(waves) if waves else []
            for (_, name, _), (units, durations) in zip(batch, results, strict=True):
                if units.size == 0:
                    errors.append({"file_name": name, "error": "too short for one HuBERT frame"})
                    continue
                output.append(
                    {"file_name": name, "units": units.tolist(), "duration": durations.tolist()}
                )
                written += 1
            output.flush()
            bar.update(sum(item[0] for item in batch) + sum(f["seconds"] for f in failed))
    return written


def _loaded_batches(todo, batch_seconds: float, trim: bool) -> Iterator[tuple[list, list, list]]:
    """(entries, waves, failures) per batch of about `batch_seconds`, decoded one batch ahead."""
    from jaxslm.speech.audio import load_audio

    groups, current, seconds = [], [], 0.0
    for entry in todo:
        if current and seconds + entry[0] > batch_seconds:
            groups.append(current)
            current, seconds = [], 0.0
        current.append(entry)
        seconds += entry[0]
    if current:
        groups.append(current)

    def load(group):
        kept, waves, failed = [], [], []
        for entry in group:
            try:
                waves.append(load_audio(entry[2], trim_silence=trim))
                kept.append(entry)
            except JaxslmError as error:
                failed.append({"file_name": entry[1], "error": str(error), "seconds": entry[0]})
        return kept, waves, failed

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, groups[0]) if groups else None
        for index in range(len(groups)):
            result = pending.result()
            if index + 1 < len(groups):
                pending = pool.submit(load, groups[index + 1])
            yield result


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        counts = tokenize(args)
    except JaxslmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{counts['tokenized']} file(s) tokenized, {counts['errors']} failed, "
        f"{counts['done_before']} already in the output, {counts['files']} listed; "
        f"output {args.out}"
    )
    return 0


if __name__ == "__main__":
    from jaxslm.backend import prepare_process

    prepare_process()
    sys.exit(main())
