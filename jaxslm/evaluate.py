"""`python -m jaxslm.evaluate`: score a speech LM on the likelihood benchmarks.

Each task compares the log-likelihood of a positive and a negative input (a real word and a
non-word, a right and a wrong story ending, ...) and reports pairwise accuracy, with ties
counted 0.5, exactly as slamkit defines it. One model load serves every task:

  python -m jaxslm.evaluate --checkpoint runs/tiny --data-dir data/toy/eval
  python -m jaxslm.evaluate --checkpoint ckpt/slam --task sblimp --data sblimp.jsonl \\
      --task swuggy --data swuggy/ --units swuggy_units.jsonl --out results.json

Data is a pre-tokenized JSONL file (lines {file_name, units?, text?, phenomenon?}) or a folder
in slamkit's layout: numbered files `<int>_*.wav` (sBLIMP `<int>+*.wav`) taken in pairs,
positive first, optionally one subfolder per speaker; SALMon `<root>/<part>/*_<index>_*.wav`;
cross-modal StoryCloze `<base>_{mutual,correct,incorrect}.{wav,txt}`. Audio in folders is
tokenized with --hubert/--layer/--codebook (as `python -m jaxslm.tokenize_audio` does), or read
from --units, the JSONL that command writes.

--convention cuervo-marxer scores as Cuervo & Marxer's scaling paper does (mean unit NLL
without a terminal EOS; sBLIMP macro over phenomena and voice-pair accuracy, with voices from
ZeroSpeech's gold.csv or the layout; see jaxslm.evals.cuervo_marxer).

Generative tasks (slamkit's generative metrics): `generate` writes continuations of 3 s prompts
as audio, `asr_perplexity` transcribes them with Whisper and reports the transcripts' perplexity
under a text LM and their auto-BLEU, `llm_as_judge` has a local LM rate them. They need
--vocoder (see the generative options below):

  python -m jaxslm.evaluate --checkpoint runs/tiny --task generate \\
      --data data/toy/eval/sstorycloze.jsonl --vocoder toy --audio-out generated/

Scores are float32 (--dtype). --compat slamkit reproduces slamkit's own numbers where its rules
differ from jaxslm's: targets equal to id 0 are not scored, its modality restriction, and audio
tokenized in zero-padded batches of --slamkit-batch-size pairs (see the README).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxslm.cli_help import HelpFormatter
from jaxslm.errors import JaxslmError
from jaxslm.evals.compat import COMPAT_MODES, SLAMKIT_BATCH_SIZE
from jaxslm.evals.cuervo_marxer import CONVENTIONS
from jaxslm.evals.generative import (
    GENERATIVE_HELP,
    GENERATIVE_TASKS,
    add_arguments,
    check_generative,
)
from jaxslm.evals.tasks import CROSS_MODAL_SETTINGS, SALMON_PARTS, TASKS
from jaxslm.speech.tokenizer_args import add_tokenizer_args, tokenizer_from_args
from jaxslm.strict_json import strict_json

RESULTS_FORMAT = 1


def _parser() -> argparse.ArgumentParser:
    tasks = "\n".join(
        [f"  {name:18s} {spec.description}" for name, spec in TASKS.items()]
        + [f"  {name:18s} {GENERATIVE_HELP[name]}" for name in GENERATIVE_TASKS]
    )
    parser = argparse.ArgumentParser(
        prog="python -m jaxslm.evaluate",
        description=__doc__,
        epilog=f"tasks:\n{tasks}",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="jaxslm checkpoint or run directory")
    parser.add_argument(
        "--task", action="append", default=[], help="task name (repeat for several tasks)"
    )
    parser.add_argument(
        "--data", action="append", default=[], help="data of the task at the same position"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="folder holding <task>.jsonl or <task>/ per task; without --task, every task found",
    )
    parser.add_argument("--units", type=Path, help="units JSONL for audio files in data folders")
    add_tokenizer_args(parser, required=False, purpose="to tokenize audio in data folders")
    parser.add_argument(
        "--normalize",
        choices=("mean", "sum"),
        default="mean",
        help="log-likelihood per target token (mean, slamkit's default) or summed",
    )
    parser.add_argument(
        "--modality",
        choices=("speech", "text"),
        help="renormalise the softmax over this modality's tokens (slamkit's used_token_modality); "
        "tasks that score the other modality are refused",
    )
    parser.add_argument(
        "--salmon-parts",
        nargs="+",
        choices=SALMON_PARTS,
        metavar="PART",
        help=f"SALMon parts (default: all found): {', '.join(SALMON_PARTS)}",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=CROSS_MODAL_SETTINGS,
        default=list(CROSS_MODAL_SETTINGS),
        help="cross-modal StoryCloze settings (prompt->ending modality)",
    )
    parser.add_argument(
        "--batch-tokens",
        type=int,
        help="tokens per scored batch, rows x length (default 1024 on CPU, 16384 on GPU/TPU)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype (float32 as slamkit scores, whatever the model trained in)",
    )
    parser.add_argument(
        "--compat",
        choices=COMPAT_MODES,
        default="jaxslm",
        help="scoring rules: jaxslm's or slamkit's, to reproduce its published numbers",
    )
    parser.add_argument(
        "--slamkit-batch-size",
        type=int,
        help=f"with --compat slamkit: pairs whose audio is padded together (default "
        f"{SLAMKIT_BATCH_SIZE}, slamkit's config/eval.yaml batch_size)",
    )
    parser.add_argument(
        "--mesh",
        default="-1,1,1",
        help="data,fsdp,tensor mesh sizes over the devices (-1 fills; -1,1,1: all data-parallel)",
    )
    parser.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="slamkit",
        help="scoring convention: slamkit's or cuervo-marxer (their scaling paper: "
        "mean unit NLL without terminal EOS, sBLIMP macro and voice-pair accuracy; --hubert "
        "audio tokenized as their slm-data encode does)",
    )
    parser.add_argument(
        "--gold",
        type=Path,
        help="with --convention cuervo-marxer: ZeroSpeech gold.csv of the sBLIMP task "
        "(default: DATA/gold.csv when present; else voices are subfolders)",
    )
    parser.add_argument(
        "--unit-pieces",
        type=Path,
        help="for a model over unigram speech tokens: its unit_pieces/ model; the data holds "
        "units, encoded to tokens here (a token corpus's eval/ sets are encoded already)",
    )
    parser.add_argument("--out", type=Path, help="write results JSON here")
    parser.add_argument("--pairs-out", type=Path, help="write per-pair log-likelihoods (JSONL)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_arguments(parser)
    return parser


def resolve_requests(args: argparse.Namespace):
    """The (task, data) list from --task/--data/--data-dir, checked before any model work."""
    from jaxslm.evals.cuervo_marxer import check_convention
    from jaxslm.evals.restriction import check_tasks
    from jaxslm.evals.runner import TaskRequest, find_task_data
    from jaxslm.evals.tasks import task_spec

    if (args.hubert is None) != (args.codebook is None):
        raise JaxslmError("--hubert and --codebook go together: the HuBERT model and its k-means")
    if args.slamkit_batch_size is not None and (
        args.compat != "slamkit" or args.slamkit_batch_size < 1
    ):
        raise JaxslmError(
            "--slamkit-batch-size takes a positive number of pairs, with --compat slamkit"
        )
    _check_convention_flags(args)
    names = list(args.task)
    if args.data_dir is not None:
        if args.data:
            raise JaxslmError("give either --data per task or one --data-dir, not both")
        if not args.data_dir.is_dir():
            raise JaxslmError(f"--data-dir {args.data_dir}: no such folder")
        names = names or [n for n in TASKS if find_task_data(args.data_dir, n) is not None]
        if not names:
            raise JaxslmError(f"--data-dir {args.data_dir}: holds no <task>.jsonl or <task>/")
        paths = [find_task_data(args.data_dir, n) or args.data_dir / f"{n}.jsonl" for n in names]
    else:
        if not names:
            raise JaxslmError("name at least one --task with its --data, or give --data-dir")
        if len(args.data) != len(names):
            raise JaxslmError(
                f"{len(names)} --task but {len(args.data)} --data: give one --data per --task"
            )
        paths = [Path(p) for p in args.data]
    requests = []
    for name, path in zip(names, paths, strict=True):
        if name not in GENERATIVE_TASKS:
            task_spec(name)
        check_convention(args.convention, name)
        if not path.exists():
            raise JaxslmError(f"--task {name}: data {path} does not exist")
        parts = tuple(args.salmon_parts) if args.salmon_parts else None
        requests.append(TaskRequest(name, path, args.units, parts, tuple(args.settings)))
    if len({r.name for r in requests}) != len(requests):
        raise JaxslmError("a task is named twice; run it once per call")
    check_tasks(args.modality, [n for n in names if n not in GENERATIVE_TASKS], args.settings)
    check_generative(args, names)
    return requests


def _check_convention_flags(args: argparse.Namespace) -> None:
    """The cuervo-marxer convention fixes the normalisation, restriction and rules."""
    if args.gold is not None and not args.gold.is_file():
        raise JaxslmError(f"--gold {args.gold}: no such file")
    if args.convention != "cuervo-marxer":
        if args.gold is not None:
            raise JaxslmError("--gold goes with --convention cuervo-marxer")
        return
    fixed = {"--normalize sum": args.normalize != "mean", "--modality": args.modality}
    fixed["--compat slamkit"] = args.compat != "jaxslm"
    clashes = [flag for flag, given in fixed.items() if given]
    if clashes:
        raise JaxslmError(
            f"--convention cuervo-marxer fixes mean NLL, no modality restriction and its own "
            f"rules; drop {', '.join(clashes)}"
        )


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any scoring, an --out or --pairs-out that cannot be written."""
    from jaxslm.fsutil import prepare_output_file

    outputs = [path for path in (args.out, args.pairs_out) if path is not None]
    if len(outputs) == 2 and outputs[0].absolute() == outputs[1].absolute():
        raise JaxslmError(f"--out and --pairs-out are both {args.out}; give two different files")
    for path in outputs:
        prepare_output_file(path)


def _mesh_sizes(text: str) -> tuple[int, int, int]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) != 3:
        raise JaxslmError(f"--mesh {text!r}: give three sizes data,fsdp,tensor such as -1,1,1")
    return sizes


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        requests = resolve_requests(args)
        mesh_sizes = _mesh_sizes(args.mesh)
        check_outputs(args)
        results = evaluate(args, requests, mesh_sizes)
    except JaxslmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from jaxslm.evals.generative import format_generative
    from jaxslm.evals.runner import format_table

    pairwise = {k: v for k, v in results["tasks"].items() if k not in GENERATIVE_TASKS}
    generative = {k: v for k, v in results["tasks"].items() if k in GENERATIVE_TASKS}
    if pairwise:
        print(format_table(pairwise))
    if generative:
        print(format_generative(generative))
    return 0


def evaluate(args: argparse.Namespace, requests, mesh_sizes) -> dict:
    """Load the model once, run every request, write --out / --pairs-out; returns the results."""
    import jaxslm
    from jaxslm.evals.cuervo_marxer import run_convention
    from jaxslm.evals.runner import prepare_task, score_task
    from jaxslm.evals.tasks import SequenceBuilder
    from jaxslm.fsutil import atomic_write_text
    from jaxslm.model_dir import load_tokenizer
    from jaxslm.sharding import make_mesh
    from jaxslm.speech.unit_pieces import unit_pieces_for

    mesh = make_mesh(*mesh_sizes)
    lm = jaxslm.load(args.checkpoint, mesh=mesh, compute_dtype=args.dtype)
    scorer = lm.make_scorer(args.batch_tokens, compat=args.compat)
    unit_pieces = unit_pieces_for(args.unit_pieces, lm.vocab.num_units)
    tokenizer = load_tokenizer(args.checkpoint, lm.vocab)
    builder = SequenceBuilder(lm.vocab, tokenizer, unit_pieces)
    num_units = lm.vocab.num_units if unit_pieces is None else unit_pieces.num_units
    audio = _audio_units(args, num_units) if args.hubert is not None else None
    prepared = {
        request.name: prepare_task(scorer, builder, request, args.modality, audio)
        for request in requests
        if request.name not in GENERATIVE_TASKS and args.convention != "cuervo-marxer"
    }
    summaries, pair_lines = {}, []
    for request in requests:
        progress = not args.no_progress
        if request.name in GENERATIVE_TASKS:
            from jaxslm.evals.generative import run_generative

            summary, items = run_generative(
                lm, builder.tokenizer, request.name, request.data, args, audio, unit_pieces
            )
            summaries[request.name] = summary
            pair_lines += [strict_json(item) for item in items]
            continue
        if args.convention == "cuervo-marxer":
            result = run_convention(scorer, builder, request, args.gold, progress, audio)
        else:
            paired = prepared[request.name]
            result = score_task(scorer, request, paired, args.normalize, args.modality, progress)
            _warn_non_finite(request.name, result.summary)
        summaries[request.name] = result.summary
        pair_lines += [strict_json({"task": request.name, **pair}) for pair in result.pairs]
    results = {
        "format": RESULTS_FORMAT,
        "checkpoint": str(Path(args.checkpoint).absolute()),
        "settings": {
            "normalize": args.normalize,
            "modality": args.modality,
            "dtype": lm.config.dtype,
            "compat": args.compat,
            "convention": args.convention,
            "batch_tokens": scorer.batch_tokens,
            "mesh": dict(mesh.shape),
        },
        "tasks": summaries,
    }
    if args.out is not None:
        atomic_write_text(args.out, strict_json(results, indent=2) + "\n")
    if args.pairs_out is not None:
        atomic_write_text(args.pairs_out, "".join(line + "\n" for line in pair_lines))
    return results


def _warn_non_finite(name: str, summary: dict) -> None:
    """Say on stderr how many pairs of a task the model gave a non-finite log-likelihood."""
    count = summary.get("non_finite_pairs")
    if count:
        print(
            f"warning: {name}: the model gave {count} of {summary['pairs']} pairs a NaN or "
            "infinite log-likelihood (null in --pairs-out); their accuracy is not meaningful",
            file=sys.stderr,
        )


def _audio_units(args: argparse.Namespace, num_units: int):
    """The HuBERT tokenizer of --hubert/--codebook, batched as --compat says."""
    from jaxslm.evals.audio_units import AudioUnits

    tokenizer = tokenizer_from_args(args, convention=args.convention)
    if tokenizer.num_units != num_units:
        raise JaxslmError(
            f"--codebook {args.codebook} has {tokenizer.num_units} units but the model "
            f"was trained on {num_units}"
        )
    if args.compat != "slamkit":
        return AudioUnits(tokenizer)
    return AudioUnits(tokenizer, args.slamkit_batch_size or SLAMKIT_BATCH_SIZE)


if __name__ == "__main__":
    from jaxslm.backend import prepare_process

    prepare_process()
    sys.exit(main())
