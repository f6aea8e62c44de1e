"""`python -m jaxslm.generate`: continue spoken or written prompts in speech or text.

  python -m jaxslm.generate --checkpoint runs/tiny --prompt-units prompts.jsonl \\
      --modality speech --out continuations.jsonl
  python -m jaxslm.generate --checkpoint ckpt/sims --prompt-text "Once upon a time" \\
      --modality speech --n 4 --out spoken.jsonl
  python -m jaxslm.generate --checkpoint ckpt/sims --prompt-audio wavs/ --hubert mhubert \\
      --codebook km500.npy --modality text --out answers.jsonl

Defaults are slamkit's: temperature 0.8, top-k 25, 150 new tokens, prompts cut to their first
3 s, the other modality's tokens banned, and the output modality's marker appended for
interleaved models. Each output line holds the prompt, the settings and the continuation:
`units` (and `units_str`, space-separated, the code format textless/fairseq vocoders read)
for speech, `text` for text.

--unit-pieces DIR (the `unit_pieces/` of a token corpus, `python -m jaxslm.data.unit_pieces`)
is for models trained on unigram speech tokens: speech prompts are cut in units, then encoded
to tokens; each continuation's tokens are kept as `tokens` and decoded back to `units` for a
vocoder.

With --vocoder (a textless/fairseq unit HiFi-GAN folder, or `toy`) and --audio-out, each speech
continuation is also vocoded into a wav (`<prompt>-<sample>.wav`, its path in the line's
`audio`); --audio-prompt puts the prompt's units before it, as slamkit's generate metric does.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from jaxslm.cli_help import HelpFormatter
from jaxslm.errors import JaxslmError
from jaxslm.generation.seeds import batch_seed
from jaxslm.speech.tokenizer_args import add_tokenizer_args, tokenizer_from_args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxslm.generate",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="jaxslm checkpoint or run directory")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt-audio", type=Path, help="audio file, folder or list file")
    prompt.add_argument(
        "--prompt-units", type=Path, help="JSONL of {file_name, units, duration} (tokenize_audio)"
    )
    prompt.add_argument("--prompt-text", nargs="+", help="one or more text prompts")
    parser.add_argument(
        "--modality", required=True, choices=("speech", "text"), help="what to generate"
    )
    parser.add_argument("--out", required=True, type=Path, help="output JSONL")
    parser.add_argument("--n", type=int, default=1, help="continuations per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=150, help="tokens per continuation")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=25, help="0 = off")
    parser.add_argument("--top-p", type=float, help="nucleus sampling mass (default off)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument(
        "--prompt-seconds",
        type=float,
        default=3.0,
        help="cut speech prompts to their first seconds (0 = whole prompt)",
    )
    parser.add_argument(
        "--frame-seconds", type=float, default=0.04, help="frame length of --prompt-units"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="prompts decoded together")
    add_tokenizer_args(parser, required=False, purpose="for --prompt-audio")
    parser.add_argument(
        "--unit-pieces", type=Path, help="unigram speech-token model of the checkpoint's corpus"
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        help="compute dtype (default: the dtype the model trained in)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--vocoder", help="vocode speech continuations: a textless/fairseq vocoder folder, or toy"
    )
    parser.add_argument("--audio-out", type=Path, help="folder for the wavs of --vocoder")
    parser.add_argument(
        "--audio-prompt",
        action="store_true",
        help="vocode the prompt's units before each continuation (as slamkit's generate metric)",
    )
    return parser


def _prompts(args: argparse.Namespace) -> list[tuple[str, list]]:
    """(name, pieces) per prompt."""
    from jaxslm.evals.items import jsonl_records, units_list
    from jaxslm.generation.prompts import Piece, cut_units

    seconds = args.prompt_seconds or None
    if seconds is not None and seconds < 0:
        raise JaxslmError(f"--prompt-seconds {seconds}: must be > 0 (or 0: the whole prompt)")
    if args.frame_seconds <= 0:
        raise JaxslmError(f"--frame-seconds {args.frame_seconds}: must be > 0")
    if args.prompt_text is not None:
        return [(text, [Piece("text", text=text)]) for text in args.prompt_text]
    if args.prompt_units is not None:
        if not args.prompt_units.is_file():
            raise JaxslmError(f"--prompt-units {args.prompt_units}: no such file")
        prompts = []
        for number, record in jsonl_records(args.prompt_units):
            origin = f"{args.prompt_units}:{number}"
            name = record.get("file_name")
            if not isinstance(name, str) or not name:
                raise JaxslmError(f"{origin}: each line needs a non-empty string 'file_name'")
            if "units" not in record:
                raise JaxslmError(f"{origin}: no 'units' to prompt with")
            units = units_list(record["units"], origin).tolist()
            durations = record.get("duration") or [1] * len(units)
            if len(durations) != len(units):
                raise JaxslmError(
                    f"{origin}: 'duration' has {len(durations)} values for {len(units)} units; "
                    "give one frame count per unit"
                )
            units = cut_units(units, durations, args.frame_seconds, seconds)
            prompts.append((name, [Piece("speech", units=tuple(units))]))
        if not prompts:
            raise JaxslmError(f"--prompt-units {args.prompt_units}: no lines")
        return prompts
    return _audio_prompts(args, seconds)


def _audio_prompts(args: argparse.Namespace, seconds: float | None) -> list[tuple[str, list]]:
    from jaxslm.generation.prompts import Piece
    from jaxslm.speech.audio import SAMPLE_RATE, load_audio
    from jaxslm.tokenize_audio import list_audio

    if args.hubert is None or args.codebook is None:
        raise JaxslmError("--prompt-audio needs --hubert and --codebook to tokenize the audio")
    source = args.prompt_audio
    entries = [(source.name, source)] if source.is_file() and source.suffix != ".txt" else None
    entries = entries or list_audio(source)
    tokenizer = tokenizer_from_args(args)
    waves = [load_audio(path) for _, path in entries]
    if seconds is not None:
        waves = [wave[: int(seconds * SAMPLE_RATE)] for wave in waves]
    units = tokenizer.units(waves)
    for (name, _), (ids, _) in zip(entries, units, strict=True):
        if ids.size == 0:
            raise JaxslmError(f"{name}: too short for one HuBERT frame")
    return [
        (name, [Piece("speech", units=tuple(ids.tolist()))])
        for (name, _), (ids, _) in zip(entries, units, strict=True)
    ]


def generate(args: argparse.Namespace) -> list[dict]:
    """Every continuation as an output record."""
    from tqdm import tqdm

    import jaxslm
    from jaxslm.fsutil import prepare_output_file
    from jaxslm.generation.prompts import PromptBuilder
    from jaxslm.model_dir import load_tokenizer
    from jaxslm.speech.unit_pieces import unit_pieces_for

    if args.n < 1 or args.batch_size < 1:
        raise JaxslmError("--n and --batch-size must be positive")
    prepare_output_file(args.out)
    vocoder = _vocoder(args)
    prompts = _prompts(args)
    lm = jaxslm.load(args.checkpoint, compute_dtype=args.dtype)
    unit_pieces = unit_pieces_for(args.unit_pieces, lm.vocab.num_units)
    if unit_pieces is not None:
        prompts = [(name, [_encoded(p, unit_pieces) for p in parts]) for name, parts in prompts]
    if vocoder is not None:
        from jaxslm.speech.vocode_lines import check_vocoder_for

        num_units = lm.vocab.num_units if unit_pieces is None else unit_pieces.num_units
        check_vocoder_for(vocoder, num_units)
        _check_wav_names(prompts)
    builder = PromptBuilder(lm.vocab, load_tokenizer(args.checkpoint, lm.vocab))
    jobs = [
        (name, sample, builder.ids(pieces, args.modality))
        for name, pieces in prompts
        for sample in range(args.n)
    ]
    settings = {
        "temperature": args.temperature,
        "top_k": args.top_k or None,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "max_new_tokens": args.max_new_tokens,
        "prompt_seconds": args.prompt_seconds or None,
        "seed": args.seed,
    }
    records = []
    bar = tqdm(total=len(jobs), unit="prompt", disable=args.no_progress)
    with bar:
        for start in range(0, len(jobs), args.batch_size):
            batch = jobs[start : start + args.batch_size]
            outputs = lm.generate(
                [ids for _, _, ids in batch],
                args.max_new_tokens,
                temperature=args.temperature,
                top_k=args.top_k or None,
                top_p=args.top_p,
                modality=args.modality,
                seed=batch_seed(args.seed, start // args.batch_size),
                repetition_penalty=args.repetition_penalty,
            )
            for (name, sample, ids), generated in zip(batch, outputs, strict=True):
                record = {"prompt": name, "sample": sample, "prompt_ids": ids}
                record.update(modality=args.modality, settings=settings)
                if args.modality == "speech":
                    units = builder.units_of(generated)
                    if unit_pieces is not None:
                        record["tokens"] = units
                        units = unit_pieces.decode(units).tolist()
                    record.update(units=units, units_str=" ".join(map(str, units)))
                else:
                    record["text"] = builder.text_of(generated)
                records.append(record)
            bar.update(len(batch))
    if vocoder is not None:
        _write_audio(args, vocoder, records, builder, unit_pieces)
    return records


def _encoded(part, unit_pieces):
    """A prompt part with its units as unigram speech tokens (text parts unchanged)."""
    if part.modality != "speech":
        return part
    return replace(part, units=tuple(unit_pieces.encode(np.asarray(part.units)).tolist()))


def _vocoder(args: argparse.Namespace):
    """The vocoder of --vocoder (None without), after checking --audio-out."""
    from jaxslm.fsutil import prepare_output_folder
    from jaxslm.speech.vocoder import load_vocoder

    if (args.vocoder is None) != (args.audio_out is None):
        raise JaxslmError("--vocoder and --audio-out go together: the vocoder and its wav folder")
    if args.vocoder is None:
        return None
    if args.modality != "speech":
        raise JaxslmError("--vocoder turns speech into audio; use it with --modality speech")
    prepare_output_folder(args.audio_out)
    return load_vocoder(args.vocoder)


def _check_wav_names(prompts: list[tuple[str, list]]) -> None:
    """Refuse prompts whose wavs would share a name (`a.wav` and `a.flac` both give `a-0.wav`)."""
    from jaxslm.speech.vocode_lines import wav_name

    first: dict[str, str] = {}
    for name, _ in prompts:
        wav = wav_name({"prompt": name, "sample": 0})
        if wav in first:
            raise JaxslmError(
                f"prompts {first[wav]!r} and {name!r} would both be vocoded to {wav}; "
                "rename one of them"
            )
        first[wav] = name


def _write_audio(args, vocoder, records: list[dict], builder, unit_pieces) -> None:
    from jaxslm.speech.vocode_lines import write_record_audio

    prompts = None
    if args.audio_prompt:
        prompts = [builder.units_of(r["prompt_ids"]) for r in records]
        if unit_pieces is not None:
            prompts = [unit_pieces.decode(np.asarray(p)).tolist() for p in prompts]
    write_record_audio(records, vocoder, args.audio_out, prompts, not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        records = generate(args)
    except JaxslmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from jaxslm.fsutil import atomic_write_text

    atomic_write_text(args.out, "".join(json.dumps(r) + "\n" for r in records))
    print(f"{len(records)} continuation(s) written to {args.out}")
    return 0


if __name__ == "__main__":
    from jaxslm.backend import prepare_process

    prepare_process()
    sys.exit(main())
