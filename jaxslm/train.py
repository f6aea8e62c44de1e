"""`python -m jaxslm.train [--config FILE.yaml] [key=value ...]`: train a speech LM.

Without --config it trains the tiny default (configs/tiny.yaml, shipped in the package as
jaxslm/config/tiny.yaml) on the built-in toy corpus, built into data/toy on first use.

The same command starts a run and resumes it: when RUN_DIR/checkpoints holds a checkpoint,
training continues from the latest one (model, optimizer, step and data iterator). Keys are
`section.key` as in configs/tiny.yaml (see jaxslm/config/ for every key and its default);
`run_dir=PATH` sets where checkpoints, metrics.jsonl and TensorBoard files go. `objective=dpo`
trains by preference optimisation on a preference corpus (the `dpo` section; see
configs/tiny_dpo.yaml and configs/slam_dpo_qwen2.5_0.5b.yaml).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxslm.cli_help import HelpFormatter
from jaxslm.config import load_config
from jaxslm.errors import JaxslmError

DEFAULT_CONFIG = Path(__file__).parent / "config" / "tiny.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxslm.train",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--config", help="YAML config (default: the tiny default, configs/tiny.yaml)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override config keys, e.g. optimizer.lr=1e-3 budget.max_steps=100 run_dir=runs/x",
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
        import jax

        from jaxslm.training.trainer import train

        summary = train(cfg)
    except JaxslmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    losses = summary["losses"]
    if losses and jax.process_index() == 0:
        first, last = min(losses), max(losses)
        print(
            f"steps {summary['start_step']} -> {summary['end_step']}: loss {losses[first]:.4f} "
            f"(step {first}) -> {losses[last]:.4f} (step {last})"
        )
    return 0


if __name__ == "__main__":
    from jaxslm.backend import prepare_process

    prepare_process()
    sys.exit(main())
