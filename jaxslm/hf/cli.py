"""Command line: `jaxslm-convert import-hf|export-hf` (also tools/convert_hf/convert.py)."""

from __future__ import annotations

import argparse
import math
import sys

from jaxslm.cli_help import HelpFormatter
from jaxslm.errors import JaxslmError
from jaxslm.fsutil import prepare_output
from jaxslm.hf.row_init import ROW_INIT_METHODS
from jaxslm.models.model_config import DTYPES
from jaxslm.vocab import MODES

DESCRIPTION = """Convert between HF checkpoints and jaxslm checkpoints.

import-hf reads a HF Llama 3.x / Qwen2(.5) directory (config.json, safetensors, tokenizer) or a
slamkit checkpoint, adds K speech units and the <speech>/<text> markers to the vocabulary, and
writes a jaxslm checkpoint. import-slm-scaling reads Cuervo & Marxer's scaling checkpoints
(github tiagoCuervo/slm_scaling: a native directory or a training .pt). export-hf writes a
jaxslm checkpoint back as a plain HF directory that AutoModelForCausalLM and AutoTokenizer
load with no custom code.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of both sub-commands."""
    parser = argparse.ArgumentParser(
        prog="jaxslm-convert",
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    imp = commands.add_parser(
        "import-hf",
        help="HF or slamkit directory -> jaxslm checkpoint",
        formatter_class=HelpFormatter,
    )
    imp.add_argument("hf_dir", help="HF model directory (config.json + safetensors)")
    imp.add_argument("out_dir", help="jaxslm checkpoint directory to create, in an existing folder")
    imp.add_argument(
        "--speech-units",
        type=int,
        default=None,
        metavar="K",
        help="number of speech units K (default 500, mHuBERT-25Hz; slamkit checkpoints: "
        "inferred from their vocab size); 0 keeps the text vocabulary unchanged. Directories "
        "written by export-hf carry their layout, which is used as is",
    )
    imp.add_argument(
        "--mode",
        choices=[m for m in MODES if m != "text"],
        default=None,
        help="vocabulary layout (default interleaved; slamkit checkpoints: interleaved "
        "when --tokenizer is given, else speech-only)",
    )
    imp.add_argument(
        "--tokenizer",
        default=None,
        metavar="DIR",
        help="directory with the text tokenizer.json (default: HF_DIR)",
    )
    imp.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="parameter dtype (default: bfloat16 if the weights are, else float32)",
    )
    imp.add_argument(
        "--init",
        choices=ROW_INIT_METHODS,
        default="mean_cov",
        help="how new embedding rows start (mean_cov: as transformers)",
    )
    imp.add_argument("--seed", type=int, default=0, help="seed for new embedding rows")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")

    slm = commands.add_parser(
        "import-slm-scaling",
        help="Cuervo & Marxer's slm_scaling checkpoint (native directory or .pt) -> jaxslm",
        formatter_class=HelpFormatter,
    )
    slm.add_argument("source", help="native directory (config.json + safetensors) or .pt file")
    slm.add_argument("out_dir", help="jaxslm checkpoint directory to create, in an existing folder")
    slm.add_argument(
        "--speech-units",
        type=int,
        default=None,
        metavar="K",
        help="units K (default vocab_size - 2: units, EOS, PAD; vocab_size - 1: no PAD)",
    )
    slm.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="parameter dtype (default: bfloat16 if the weights are, else float32)",
    )
    slm.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")

    exp = commands.add_parser(
        "export-hf", help="jaxslm checkpoint -> plain HF directory", formatter_class=HelpFormatter
    )
    exp.add_argument("ckpt_dir", help="jaxslm checkpoint directory")
    exp.add_argument(
        "out_dir", metavar="HF_OUT_DIR", help="HF directory to create, in an existing folder"
    )
    exp.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="dtype of the written weights (default: the checkpoint's)",
    )
    exp.add_argument(
        "--max-shard-size",
        type=float,
        default=5.0,
        metavar="GB",
        help="split safetensors into shards of at most this many GB",
    )
    exp.add_argument("--overwrite", action="store_true", help="replace an existing HF_OUT_DIR")
    return parser


def _error(message: object) -> int:
    """Print `message` as the one-line error; returns the exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run the converter; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "export-hf" and not (
        math.isfinite(args.max_shard_size) and args.max_shard_size * 10**9 >= 1
    ):
        return _error(
            f"--max-shard-size {args.max_shard_size:g}: give a positive number of GB "
            "(HF's default is 5)"
        )
    try:
        prepare_output(args.out_dir, args.overwrite, make_parents=False)
    except JaxslmError as err:
        return _error(err)
    from jaxslm.hf.exporter import export_hf
    from jaxslm.hf.importer import import_hf
    from jaxslm.hf.slm_scaling import import_slm_scaling

    try:
        if args.command == "import-hf":
            out = import_hf(
                args.hf_dir,
                args.out_dir,
                speech_units=args.speech_units,
                mode=args.mode,
                tokenizer_dir=args.tokenizer,
                dtype=args.dtype,
                init=args.init,
                seed=args.seed,
                overwrite=args.overwrite,
            )
        elif args.command == "import-slm-scaling":
            out = import_slm_scaling(
                args.source, args.out_dir, args.speech_units, args.dtype, args.overwrite
            )
        else:
            out = export_hf(
                args.ckpt_dir,
                args.out_dir,
                dtype=args.dtype,
                max_shard_bytes=int(args.max_shard_size * 10**9),
                overwrite=args.overwrite,
            )
    except JaxslmError as err:
        return _error(err)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
