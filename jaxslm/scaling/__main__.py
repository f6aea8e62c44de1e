"""`python -m jaxslm.scaling COMMAND`: scaling-law fits, compute-optimal plans and sweeps.

Each sub-command is a name, a one-line summary, a description, an `add_arguments(parser)` and a
`handler(args) -> exit code`: `fit` and `plan` here, `sweep` in jaxslm.scaling.sweep.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxslm.cli_help import HelpFormatter
from jaxslm.errors import JaxslmError

DESCRIPTION = """Scaling analysis: `fit` scaling laws to a table of training runs, `plan` the
compute-optimal model and data for a budget, `sweep` a grid of training runs. Each sub-command
explains itself with --help.
"""

FIT_SUMMARY = "fit L(N, D), IsoFLOP and downstream laws"
FIT_HELP = """Fit scaling laws to a table of training runs and write a report.

RUNS.csv: one row per run with columns params (N), tokens (D) and loss; optionally flops (C,
else 6 N D), unique_tokens or epochs (repeated data: effective tokens D' with R* fitted or
--r-star), and metric columns (downstream: Q ~ C^gamma and Q vs loss).

Writes DIR/fit.json (E, A, B, alpha, beta, a, b, e, bootstrap intervals, compute-optimal
exponents, IsoFLOP and downstream fits, settings), DIR/summary.md and PNG plots. DIR appears
complete or not at all; an existing report there (a DIR with fit.json) is replaced.
"""

PLAN_SUMMARY = "compute-optimal N, D and model for a budget"
PLAN_HELP = """Compute-optimal model size N and tokens D for a FLOP budget under a fitted law.

The budget is --flops C, or --gpu TYPE --count K --hours H [--mfu 0.4] at the GPU's dense bf16
peak. The law is a report's fit.json (--fit) or a published fit (--law). Prints N_opt, D_opt,
the loss predicted and a model shape near N_opt (non-embedding parameters; Llama family rule
of Cuervo & Marxer's ladder) with a config snippet for python -m jaxslm.train.
"""


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `fit RUNS.csv --out DIR`."""
    parser.add_argument("runs", type=Path, help="RUNS.csv")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="report folder")
    parser.add_argument(
        "--delta", type=float, default=1e-3, help="Huber delta on log-loss residuals"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=100,
        metavar="R",
        help="bootstrap resamples for intervals; 0: none",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument(
        "--drop-highest-loss",
        type=int,
        default=0,
        metavar="K",
        help="leave out the K highest-loss runs (Epoch AI drop 5 on Chinchilla)",
    )
    parser.add_argument(
        "--r-star",
        type=float,
        default=None,
        help="multi-epoch R*, fixed (default: fitted when the table has unique_tokens or epochs)",
    )
    parser.add_argument(
        "--isoflop-rtol",
        type=float,
        default=0.05,
        help="runs within this relative FLOP gap share a budget",
    )
    parser.add_argument(
        "--per-audio-second",
        action="store_true",
        help="fit over audio: D = audio_seconds, loss = loss_per_audio_second (columns a "
        "speech-only sweep writes), to compare unit and unigram-token runs",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace DIR even when it is not a previous report"
    )


def run_fit(args: argparse.Namespace) -> int:
    """The `fit` sub-command."""
    from jaxslm.fsutil import prepare_output
    from jaxslm.scaling.report import analyse
    from jaxslm.scaling.report_files import write_report
    from jaxslm.scaling.runs_table import read_runs

    overwrite = args.overwrite or (args.out / "fit.json").is_file()
    prepare_output(args.out, overwrite)  # before the fit, not after it
    if not args.delta > 0 or args.bootstrap < 0 or not args.isoflop_rtol >= 0:
        raise JaxslmError("--delta must be positive, --bootstrap and --isoflop-rtol >= 0")
    if args.r_star is not None and not args.r_star > 0:
        raise JaxslmError("--r-star must be positive")
    report = analyse(
        read_runs(args.runs, args.per_audio_second),
        delta=args.delta,
        bootstrap=args.bootstrap,
        seed=args.seed,
        drop_highest_loss=args.drop_highest_loss,
        r_star=args.r_star,
        isoflop_rtol=args.isoflop_rtol,
    )
    out = write_report(report, args.out, overwrite)
    law = report.law.law
    print(
        f"L(N, D) = {law.E:.4g} + {law.A:.4g} / N^{law.alpha:.4f} + {law.B:.4g} / "
        f"D^{law.beta:.4f} over {report.law.n_runs} runs"
    )
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"report in {out}: fit.json, summary.md and plots")
    return 0


PLAN_SHAPE_FLAGS = ("--aspect", "--head-dim", "--kv-ratio")


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `plan (--flops C | --gpu ...) (--fit FIT | --law NAME)`."""
    from jaxslm.scaling.law import PUBLISHED
    from jaxslm.scaling.optimal import GPUS

    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--flops", type=float, help="training budget C in FLOPs")
    budget.add_argument("--gpu", choices=GPUS, help="GPU type (with --count and --hours)")
    parser.add_argument("--count", type=int, help="number of GPUs")
    parser.add_argument("--hours", type=float, help="wall-clock hours")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation")
    law = parser.add_mutually_exclusive_group(required=True)
    law.add_argument(
        "--fit", type=Path, metavar="FIT_JSON", help="fit.json of a report (or its folder)"
    )
    law.add_argument(
        "--law",
        choices=sorted(PUBLISHED),
        help="published fit: speech/text (Cuervo & Marxer), chinchilla (Hoffmann "
        "et al.), epoch (Epoch AI's refit of Chinchilla)",
    )
    parser.add_argument("--aspect", type=float, default=85, help="shape rule: hidden size / layers")
    parser.add_argument("--head-dim", type=int, default=64, help="head size")
    parser.add_argument("--kv-ratio", type=int, default=1, help="query heads per KV head")


def run_plan(args: argparse.Namespace) -> int:
    """The `plan` sub-command."""
    from jaxslm.scaling.law import PUBLISHED
    from jaxslm.scaling.optimal import budget_flops, exponents, plan
    from jaxslm.scaling.report_files import read_fit
    from jaxslm.scaling.sweep import check_shape_rule

    check_shape_rule(args.aspect, args.head_dim, args.kv_ratio, "", PLAN_SHAPE_FLAGS)
    law, fitted_flops, per_nd = (PUBLISHED[args.law], None, 6.0) if args.law else read_fit(args.fit)
    source = f"--law {args.law}" if args.law else str(args.fit)
    if args.gpu:
        if args.count is None or args.hours is None:
            raise JaxslmError("--gpu needs --count and --hours")
        flops = budget_flops(args.gpu, args.count, args.hours, args.mfu)
        budget = (
            f"{args.count} x {args.gpu.upper()} for {args.hours:g} h at "
            f"{args.mfu:.0%} MFU (dense bf16 peak)"
        )
    else:
        flops, budget = args.flops, "given"
    result = plan(law, flops, args.aspect, args.head_dim, args.kv_ratio, per_nd)
    a, b = exponents(law)
    shape = result.shape
    print(
        f"law ({source}): L = {law.E:.4g} + {law.A:.4g} / N^{law.alpha:.4g} + "
        f"{law.B:.4g} / D^{law.beta:.4g}"
    )
    print(f"budget: C = {flops:.3e} FLOPs ({budget})")
    if fitted_flops is not None and not fitted_flops[0] / 10 <= flops <= 100 * fitted_flops[1]:
        print(
            f"warning: the fit's runs used {fitted_flops[0]:.3g} to {fitted_flops[1]:.3g} "
            "FLOPs; this budget extrapolates the law far beyond them (more than 100x above "
            "or 10x below)"
        )
    print(f"N_opt = {result.n_opt:.4g} parameters (~ C^{a:.3f})")
    if per_nd == 6.0:
        data = f"{result.d_opt:.4g} tokens"
    else:  # a law over seconds of audio, C = 6 N x tokens
        data = f"{result.d_opt:.4g} s of audio = {result.tokens:.4g} tokens"
    print(f"D_opt = {data} (~ C^{b:.3f}), {result.tokens / result.n_opt:.1f} tokens per parameter")
    print(f"predicted loss: {result.loss:.4f}")
    print(
        f"shape: {shape['num_layers']} layers, hidden {shape['hidden_size']}, "
        f"{shape['num_heads']} heads ({shape['num_kv_heads']} KV) of {shape['head_dim']}, "
        f"MLP {shape['intermediate_size']}: {result.shape_params:.4g} non-embedding params"
    )
    print("config:")
    print(result.config_yaml(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser with every sub-command registered."""
    from jaxslm.scaling import sweep

    parser = argparse.ArgumentParser(
        prog="python -m jaxslm.scaling",
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary, description, add_arguments, handler in (
        ("fit", FIT_SUMMARY, FIT_HELP, add_fit_arguments, run_fit),
        ("plan", PLAN_SUMMARY, PLAN_HELP, add_plan_arguments, run_plan),
        ("sweep", sweep.SUMMARY, sweep.__doc__, sweep.add_arguments, sweep.run_command),
    ):
        command = commands.add_parser(
            name,
            help=summary,
            description=description,
            formatter_class=HelpFormatter,
        )
        add_arguments(command)
        command.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; bad input prints one error line and returns 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except JaxslmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from jaxslm.backend import prepare_process

    prepare_process()
    sys.exit(main())
