"""`python -m jaxslm.tokenize_audio`: audio files -> deduplicated HuBERT units (JSONL).

  python -m jaxslm.tokenize_audio --audio wavs/ --hubert mhubert-base-25hz --layer 11 \\
      --codebook km500.npy --out units.jsonl

Each output line is `{"file_name", "units", "duration"}` as slamkit's feature files: the
deduplicated units and the frames each lasted (one frame = --frame-seconds of the model:
0.04 s for mHuBERT-25Hz, 0.02 s for 50 Hz models). `file_name` is the path relative to
--audio (a folder) or as written in the list (a text file with one path per line).

Files are tokenized in order of length, as slamkit does, in padded batches. The run is
resumable: lines go to OUT.partial as batches finish, files already there are skipped on
the next run, and OUT appears only when every file is done. A file that cannot be read is
written to OUT.errors.jsonl with the reason and the run goes on (errors are retried on the
next run). The textless k-means `.bin` is a pickle and is read only with --trust-pickle.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jaxslm.errors import JaxslmError

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxslm.tokenize_audio",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--audio", required=True, type=Path, help="a folder (searched recursively) or a list file"
    )
    parser.add_argument("--hubert", required=True, type=Path, help="HF HubertModel directory")
    parser.add_argument("--layer", type=int, default=11, help="HuBERT layer (default 11)")
    parser.add_argument(
        "--codebook", required=True, type=Path, help="k-means centroids: .npy, safetensors, .bin"
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow unpickling a joblib/sklearn .bin codebook (runs code from the file); it is "
        "converted once to .npy beside it",
    )
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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def list_audio(source: Path) -> list[tuple[str, Path]]:
    """(file_name, path) of every audio file of a folder, or of every line of a list file."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        entries = [(p.relative_to(source).as_posix(), p) for p in files if p.is_file()]
    elif source.is_file():
        lines = [line.strip() for line in source.read_text().splitlines()]
        entries = [(line, _listed_path(source, line)) for line in lines if line]
    else:
        raise JaxslmError(f"--audio {source}: no such folder or list file")
    if not entries:
        raise JaxslmError(f"--audio {source}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return entries


def _listed_path(list_file: Path, line: str) -> Path:
    path = Path(line)
    return path if path.is_absolute() else list_file.parent / path


def read_done(path: Path) -> list[dict]:
    """Complete JSON lines of a (possibly interrupted) output file."""
    if not path.is_file():
        return []
    done = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(record, dict) or "file_name" not in record:
            break
        done.append(record)
    return done


def tokenize(args: argparse.Namespace) -> dict[str, int]:
    """Tokenize every listed file not yet in --out; returns counts."""
    from jaxslm.speech.tokenizer import SpeechTokenizer

    entries = list_audio(args.audio)
    if args.out.exists():
        print(f"{args.out} exists: every file is tokenized (delete it to start over)")
        return {"files": len(entries), "tokenized": 0, "errors": 0}
    tokenizer = SpeechTokenizer.load(
        args.hubert,
        args.layer,
        args.codebook,
        args.trust_pickle,
        not args.no_dedup,
        args.batch_seconds,
        args.dtype,
    )
    return tokenize_files(
        entries, tokenizer, args.out, args.batch_seconds, args.trim_silence, not args.no_progress
    )


def tokenize_files(
    entries: list[tuple[str, Path]],
    tokenizer,
    out_path: Path,
    batch_seconds: float = 120.0,
    trim_silence: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Write `{file_name, units, duration}` lines of `entries` (from `list_audio`) to
    `out_path`, resuming from `out_path.partial`; failures go to `<stem>.errors.jsonl`."""
    from tqdm import tqdm

    from jaxslm.fsutil import atomic_write_text
    from jaxslm.speech.audio import audio_seconds

    partial = out_path.with_name(out_path.name + ".partial")
    errors_path = out_path.with_name(out_path.stem + ".errors.jsonl")
    done = read_done(partial)
    atomic_write_text(partial, "".join(json.dumps(r) + "\n" for r in done))
    finished = {r["file_name"] for r in done}
    todo, errors = [], []
    for name, path in entries:
        if name in finished:
            continue
        try:
            todo.append((audio_seconds(path), name, path))
        except JaxslmError as error:
            errors.append({"file_name": name, "error": str(error)})
    todo.sort()
    bar = tqdm(
        total=round(sum(t[0] for t in todo), 1),
        unit="s",
        desc="audio",
        disable=not progress,
    )
    written = 0
    with partial.open("a", encoding="utf-8") as out, bar:
        for batch, waves, failed in _loaded_batches(todo, batch_seconds, trim_silence):
            errors += failed
            results = tokenizer.units(waves) if waves else []
            for (_, name, _), (units, durations) in zip(batch, results, strict=True):
                if units.size == 0:
                    errors.append({"file_name": name, "error": "too short for one HuBERT frame"})
                    continue
                record = {
                    "file_name": name,
                    "units": units.tolist(),
                    "duration": durations.tolist(),
                }
                out.write(json.dumps(record) + "\n")
                written += 1
            out.flush()
            bar.update(round(sum(item[0] for item in batch) + sum(f["seconds"] for f in failed), 1))
    for error in errors:
        error.pop("seconds", None)
    if errors:
        atomic_write_text(errors_path, "".join(json.dumps(e) + "\n" for e in errors))
        print(f"{len(errors)} file(s) failed; reasons in {errors_path}", file=sys.stderr)
    elif errors_path.exists():
        errors_path.unlink()
    partial.replace(out_path)
    return {"files": len(entries), "tokenized": written, "errors": len(errors)}


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
        f"{counts['files']} listed; output {args.out}"
    )
    return 0


if __name__ == "__main__":
    from jaxslm.backend import prepare_process

    prepare_process()
    sys.exit(main())
