"""The speech tokenizer's command-line options (--hubert, --layer, --final-norm, --codebook,
--trust-pickle), shared by every command that turns audio into units."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_tokenizer_args(
    parser: argparse.ArgumentParser, *, required: bool, purpose: str = ""
) -> None:
    """Add the tokenizer's options; `purpose` ("for --audio", ...) ends the help of the two
    paths when they are optional."""
    suffix = "" if required else f", {purpose}"
    parser.add_argument(
        "--hubert", required=required, type=Path, help=f"HF HubertModel directory{suffix}"
    )
    parser.add_argument(
        "--layer",
        type=int,
        default=11,
        help="HuBERT layer, indexed as transformers' hidden_states (0: the first layer's "
        "input, L: layer L's output)",
    )
    parser.add_argument(
        "--final-norm",
        action="store_true",
        help="with --layer equal to a HuBERT-large (stable layer norm) model's last layer: "
        "apply its final LayerNorm, as transformers 4.x's hidden_states did (transformers 5 "
        "and fairseq leave it out); use it for a codebook fitted on such features",
    )
    parser.add_argument(
        "--codebook",
        required=required,
        type=Path,
        help=f"k-means centroids: .npy, safetensors, or a pickled .bin{suffix}",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow unpickling a joblib/sklearn .bin codebook (runs code from the file); it is "
        "converted once to .npy beside it",
    )


def tokenizer_from_args(args: argparse.Namespace, **options: Any):
    """The SpeechTokenizer the parsed options name (`options` go to SpeechTokenizer.load)."""
    from jaxslm.speech.tokenizer import SpeechTokenizer

    return SpeechTokenizer.load(
        args.hubert,
        args.layer,
        args.codebook,
        args.trust_pickle,
        final_norm=args.final_norm,
        **options,
    )
