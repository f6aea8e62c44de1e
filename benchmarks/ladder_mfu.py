"""MFU of Cuervo & Marxer's ladder (jaxslm.scaling.ladder) on one device, beside their A100
figures.

    python benchmarks/ladder_mfu.py [--sizes 20m,85m,155m,309m,823m] [--seq-len 2050]
        [--micro-batch N] [--steps 3] [--warmup 1] [--repeat 1] [--dtype bfloat16]
        [--remat none] [--json PATH]

Each size trains its preset (their shape, 500 units, vocabulary 502) with jaxslm's train step
(train_step.py's jaxslm side: float32 parameters, AdamW, one document per row as their
2,050-token windows) on their micro-batch: the rows of one accumulated part of their update
(sequences / accumulation; 823M: their curve's 456 / 19 = 24), unless --micro-batch is given.
Two MFUs are printed: jaxslm's (train = 3 x forward, causal attention halved; jaxslm.scaling
.flops) and theirs (nanoGPT's 6 N + 12 L H Q T per token, attention not halved:
`nanogpt_flops_per_token`), both against the device's dense bf16 peak, beside their stable MFU
on one A100-80GB PCIe (github tiagoCuervo/slm_scaling RESULTS.md: bf16 autocast,
torch.compile). The devices differ, so compare utilisation, not speed. On a CPU (or in
float32) there is no peak and MFU is n/a; --sizes 20m --seq-len 256 --micro-batch 2
--dtype float32 tests the script there.
"""

from __future__ import annotations

import argparse
import json

from train_step import device_kind, jaxslm_tokens_per_second, model_config

from jaxslm.scaling.flops import mfu, nanogpt_flops_per_token, peak_flops_per_device
from jaxslm.scaling.ladder import LADDER, check_sizes


def measure(size: str, args: argparse.Namespace, device: str) -> dict:
    """One size's tokens/s and both MFUs (None where the device has no known peak)."""
    rung = LADDER[size]
    rows = args.micro_batch or rung.sequences // rung.micro_batches
    cfg = model_config(size, args.seq_len, args.dtype, args.remat)
    common = (cfg, rows, args.seq_len, args.steps, args.warmup, args.repeat, args.dtype, device)
    measured = jaxslm_tokens_per_second(*common, 1)
    kind = device_kind("jaxslm", device)
    peak = peak_flops_per_device(kind, args.dtype)
    rate = measured.tokens_per_second
    theirs = None if peak is None else rate * nanogpt_flops_per_token(cfg, args.seq_len) / peak
    return {
        "size": size,
        "device_kind": kind,
        "micro_batch": rows,
        "seq_len": args.seq_len,
        "tokens_per_second": rate,
        "mfu": None if peak is None else mfu(rate, cfg, args.seq_len, peak),
        "mfu_nanogpt": theirs,
        "their_a100_mfu": rung.a100_mfu,
        "peak_bytes": measured.peak_bytes,
    }


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=",".join(LADDER), help="comma-separated rungs")
    parser.add_argument("--seq-len", type=int, default=2050, help="their block_size (2050)")
    parser.add_argument("--micro-batch", type=int, help="rows per step (default: theirs)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--repeat", type=int, default=1, help="timed loops (median)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--remat", default="none", help="model.remat policy (default none)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    sizes = check_sizes(tuple(s.strip() for s in args.sizes.split(",") if s.strip()))
    import jax

    device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    results = []
    print(f"{'size':6s} {'rows':>5s} {'tokens/s':>12s} {'MFU':>7s} {'nanoGPT':>8s} {'A100':>7s}")
    for size in sizes:
        row = measure(size, args, device)
        results.append(row)
        print(
            f"{size:6s} {row['micro_batch']:5d} {row['tokens_per_second']:12,.0f} "
            f"{percent(row['mfu']):>7s} {percent(row['mfu_nanogpt']):>8s} "
            f"{percent(row['their_a100_mfu']):>7s}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"config": vars(args), "results": results}, file, indent=1)


if __name__ == "__main__":
    main()
