"""Scaling sweeps: the grid of training runs one sweep config describes, run one after another
(finished runs skipped) or written out for a cluster scheduler, and the table of their results.

A sweep config is YAML:

  base: configs/tiny.yaml          # the training config every run starts from
  out: runs/sweeps/tiny            # runs/, logs/, configs/, commands.sh, runs.csv, report/
  params: [2.0e+5, 5.0e+5, 1.0e+6] # target non-embedding parameter counts N
  tokens_per_param: [5, 10, 20]    # token budgets D = r N ...
  flops: []                        # ... and/or IsoFLOP budgets C: D = C / (6 N) for every N
  aspect: 32                       # the shape rule: hidden_size / num_layers
  head_dim: 32
  kv_ratio: 2                      # query heads per KV head
  overrides: [optimizer.lr=3e-3]   # applied to every run
  steps: []                        # ... and/or explicit update counts per run

The shape rule (a Llama family as Cuervo & Marxer's 20M-823M ladder): with SwiGLU width 8/3 d
a layer holds about 12 d^2 weights, so N = 12 L d^2 with d = aspect x L gives
d = (aspect N / 12)^(1/3), rounded to a multiple of head_dim, and L = N / (12 d^2). Each run's
schedule spans its own token budget (budget.max_steps), and its held-out loss is measured at
its last step.

`family: cuervo-marxer` runs Cuervo & Marxer's ladder instead of the shape rule
(jaxslm.scaling.ladder): `sizes` (default all of 20m, 85m, 155m, 309m, 823m) with their
shapes, their 2,050-token sequences, sequences per update, accumulation and warmup
(`paper_batch: false` keeps the base config's batch), and as budgets their scaling curve's
update counts (the first `curve_points` of each size; default all) unless `steps`,
`tokens_per_param` or `flops` are given (see configs/scaling/cuervo_marxer_sweep.yaml).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from jaxslm.config import TrainConfig, dump_config, load_config
from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_write_text, prepare_output_folder
from jaxslm.models.model_config import SHAPE_FIELDS
from jaxslm.scaling.ladder import FAMILIES, LADDER, batch_keys, check_sizes, shape_keys
from jaxslm.textfiles import read_yaml_mapping
from jaxslm.training.metrics_log import read_metrics

SUMMARY = "run or write out a grid of training runs and collect their results"
RUNS_FILE = "runs.csv"
SWEEP_OVERRIDES = "the sweep's overrides"
SWEEP_KEYS = "base, out, params, tokens_per_param/flops/steps, family, sizes, ..."


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: base config, parameter targets, token budgets and the shape rule."""

    base: str
    out: str
    params: tuple[float, ...] = ()
    tokens_per_param: tuple[float, ...] = ()
    flops: tuple[float, ...] = ()
    aspect: float = 32.0
    head_dim: int = 32
    kv_ratio: int = 1
    overrides: tuple[str, ...] = ()
    steps: tuple[float, ...] = ()
    family: str = "rule"
    sizes: tuple[str, ...] = ()
    curve_points: int | None = None
    paper_batch: bool = True

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise JaxslmError(f"sweep: family {self.family!r} is not one of {FAMILIES}")
        budgets = (*self.tokens_per_param, *self.flops, *self.steps)
        if budgets and min(budgets) <= 0:
            raise JaxslmError("sweep: tokens_per_param, flops and steps must be positive")
        if self.family == "cuervo-marxer":
            check_sizes(self.sizes)
            if self.params:
                raise JaxslmError("sweep: family cuervo-marxer takes sizes, not params")
            if self.curve_points is not None and self.curve_points < 1:
                raise JaxslmError("sweep: curve_points must be at least 1")
            return
        if not self.params or min(self.params) <= 0:
            raise JaxslmError("sweep: params must list positive parameter counts")
        if not budgets:
            raise JaxslmError("sweep: give tokens_per_param and/or flops budgets (or steps)")
        check_shape_rule(self.aspect, self.head_dim, self.kv_ratio, "sweep: ", SHAPE_RULE_KEYS)


SHAPE_RULE_KEYS = ("aspect", "head_dim", "kv_ratio")


def check_shape_rule(
    aspect: Any, head_dim: Any, kv_ratio: Any, where: str, names: tuple[str, str, str]
) -> None:
    """Refuse a shape rule `shape_for` cannot follow: aspect, head_dim and kv_ratio must be
    positive finite numbers. `names` are how the user wrote them (the sweep's keys, or plan's
    flags); `where` starts the error."""
    bad = [
        f"{name} {value!r}"
        for name, value in zip(names, (aspect, head_dim, kv_ratio), strict=True)
        if not (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        )
    ]
    if bad:
        raise JaxslmError(
            f"{where}{names[0]}, {names[1]} and {names[2]} must be positive; got {', '.join(bad)}"
        )


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and check a sweep YAML (unknown keys are errors that list the known ones)."""
    path = Path(path)
    if not path.is_file():
        raise JaxslmError(f"{path}: no such sweep config")
    if path.suffix.lower() in (".csv", ".tsv"):
        raise JaxslmError(
            f"{path}: sweep reads a YAML sweep config (keys {SWEEP_KEYS}; see "
            "configs/scaling/tiny_sweep.yaml); to fit a table of runs, use "
            "`python -m jaxslm.scaling fit`"
        )
    values = read_yaml_mapping(path, "sweep config", f"keys {SWEEP_KEYS}")
    known = {f.name for f in fields(SweepConfig)}
    unknown = sorted(str(key) for key in values if key not in known)
    if unknown:
        raise JaxslmError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {sorted(known)}")
    required = (
        ("base", "out", "params") if values.get("family", "rule") == "rule" else ("base", "out")
    )
    missing = [k for k in required if k not in values]
    if missing:
        raise JaxslmError(f"{path}: missing key(s) {', '.join(missing)}")
    for key in ("params", "tokens_per_param", "flops", "overrides", "steps", "sizes"):
        if key in values and not isinstance(values[key], list):
            raise JaxslmError(f"{path}: {key} must be a YAML list [...], got {values[key]!r}")
        values[key] = tuple(values.get(key, ()))
    values["sizes"] = tuple(str(size) for size in values["sizes"])
    for key in ("params", "tokens_per_param", "flops", "steps"):
        values[key] = tuple(_number(path, key, value) for value in values[key])
    try:
        sweep = SweepConfig(**values)
    except (TypeError, ValueError) as err:
        raise JaxslmError(f"{path}: {err}") from None
    except JaxslmError as err:
        raise JaxslmError(f"{path}: {err}") from None
    if not Path(sweep.base).is_file():
        raise JaxslmError(
            f"{path}: base: {sweep.base} is not a file (a relative base is read from the "
            f"current folder, {Path.cwd()}): run from the folder it is relative to, or make "
            "it absolute"
        )
    return sweep


def _number(path: Path, key: str, value: Any) -> float:
    """A finite number of a sweep config list (PyYAML reads `1e6`, without a dot, as a
    string)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise JaxslmError(f"{path}: {key} must list finite numbers, got {value!r}")
    return number


def shape_for(params: float, aspect: float, head_dim: int, kv_ratio: int) -> dict[str, int]:
    """Model keys of a Llama shape with about `params` non-embedding weights."""
    width = max(
        head_dim * kv_ratio,
        round((aspect * params / 12) ** (1 / 3) / (head_dim * kv_ratio)) * head_dim * kv_ratio,
    )
    layers = max(1, round(params / (12 * width**2)))
    heads = width // head_dim
    return {
        "hidden_size": width,
        "num_layers": layers,
        "num_heads": heads,
        "num_kv_heads": heads // kv_ratio,
        "head_dim": head_dim,
        "intermediate_size": _round_up(8 * width // 3, 32),
    }


@dataclass(frozen=True)
class Run:
    """One training run of the sweep."""

    name: str
    overrides: tuple[str, ...] = field(default=())
    steps: int = 0


def shape_params(shape: dict[str, int], family: str = "llama") -> int:
    """Non-embedding parameters of a `shape_for` shape (the `params` of runs.csv)."""
    from jaxslm.models.model_config import ModelConfig, family_biases
    from jaxslm.scaling.flops import param_count

    biases = family_biases(family)
    model = ModelConfig(family=family, vocab_size=1, tie_word_embeddings=True, **shape, **biases)
    return param_count(model, include_embedding=False)


def plan_runs(sweep: SweepConfig) -> list[Run]:
    """Every run of the grid, smallest compute first; names say the target N and D. Budgets
    use the non-embedding parameters N of each run's actual shape, so that 6 N D of the runs of
    one IsoFLOP budget equals that budget up to rounding to whole steps."""
    base = load_config(sweep.base, [*sweep.overrides, "budget.max_steps=1"], SWEEP_OVERRIDES)
    runs = {}
    if sweep.family == "cuervo-marxer":
        for size in check_sizes(sweep.sizes):
            keys = shape_keys(size) | (batch_keys(size) if sweep.paper_batch else {})
            per_step = base.tokens_per_step
            if sweep.paper_batch:
                per_step = LADDER[size].tokens_per_update
            params = shape_params({k: keys[f"model.{k}"] for k in SHAPE_FIELDS})
            curve = LADDER[size].curve[: sweep.curve_points]
            for steps in _budget_steps(sweep, params, per_step) or curve:
                name = f"{size}_D{_short(steps * per_step)}"
                runs[name] = Run(name, _run_overrides(sweep, keys, steps, name), steps)
        return sorted(runs.values(), key=lambda run: (_cost(run), run.name))
    per_step = base.tokens_per_step
    for target in sweep.params:
        shape = shape_for(target, sweep.aspect, sweep.head_dim, sweep.kv_ratio)
        params = shape_params(shape, base.model.family)
        keys = {f"model.{key}": value for key, value in shape.items()}
        for steps in _budget_steps(sweep, params, per_step):
            name = f"N{_short(target)}_D{_short(steps * per_step)}"
            runs[name] = Run(name, _run_overrides(sweep, keys, steps, name), steps)
    return sorted(runs.values(), key=lambda run: (_cost(run), run.name))


def _budget_steps(sweep: SweepConfig, params: int, per_step: int) -> list[int]:
    """Update counts of the budgets: tokens r N and C / (6 N) to whole steps, and `steps`."""
    tokens = [ratio * params for ratio in sweep.tokens_per_param]
    tokens += [flops / (6 * params) for flops in sweep.flops]
    return [max(1, round(t / per_step)) for t in tokens] + [int(s) for s in sweep.steps]


def _run_overrides(sweep: SweepConfig, keys: dict, steps: int, name: str) -> tuple[str, ...]:
    keys = [f"{key}={value}" for key, value in keys.items()]
    keys += [
        f"budget.max_steps={steps}",
        f"eval.every_steps={steps}",
        f"checkpoint.every_steps={steps}",
        "logging.progress_bar=false",
        f"name={name}",
        f"run_dir={Path(sweep.out) / 'runs' / name}",
    ]
    return (*sweep.overrides, *keys)


def _cost(run: Run) -> float:
    overrides = dict(item.split("=", 1) for item in run.overrides)
    width, layers = int(overrides["model.hidden_size"]), int(overrides["model.num_layers"])
    return run.steps * layers * width**2


def write_commands(sweep: SweepConfig, runs: list[Run]) -> Path:
    """One resolved config per run under OUT/configs and OUT/commands.sh with one line each."""
    out = Path(sweep.out)
    lines = ["#!/bin/sh", "# one training run per line; each resumes by itself when re-run"]
    for run in runs:
        config_path = out / "configs" / f"{run.name}.yaml"
        dump_config(load_config(sweep.base, list(run.overrides)), config_path)
        lines.append(f"{sys.executable} -m jaxslm.train --config {config_path}")
    commands = atomic_write_text(out / "commands.sh", "\n".join(lines) + "\n")
    commands.chmod(0o755)
    return commands


def last_record(cfg: TrainConfig) -> dict[str, Any]:
    """The run's last complete metrics record ({} when it has none)."""
    if not (Path(cfg.run_dir) / "metrics.jsonl").is_file():
        return {}
    records = read_metrics(cfg.run_dir)
    return records[-1] if records else {}


def finished(cfg: TrainConfig) -> bool:
    """Whether the run reached its last step with a held-out loss logged."""
    last = last_record(cfg)
    return last.get("step") == cfg.budget.max_steps and "eval_loss" in last


def run_local(sweep: SweepConfig, runs: list[Run], log=print) -> None:
    """Train every unfinished run in order, each in its own process with its output in
    OUT/logs/<run>.log (a crash stops the sweep with the run named; re-running resumes it)."""
    logs = Path(sweep.out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for index, run in enumerate(runs, start=1):
        cfg = load_config(sweep.base, list(run.overrides))
        prefix = f"[{index}/{len(runs)}] {run.name}"
        if finished(cfg):
            log(f"{prefix}: finished, skipped")
            continue
        command = [sys.executable, "-m", "jaxslm.train", "--config", sweep.base, *run.overrides]
        log_path = logs / f"{run.name}.log"
        log(f"{prefix}: {run.steps} steps, output in {log_path}")
        started = time.monotonic()
        with open(log_path, "w") as output:
            code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT).returncode
        if code:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise JaxslmError(
                f"run {run.name} failed (exit {code}); re-run the sweep to resume it. Its "
                f"log {log_path} ends:\n{tail}"
            )
        log(f"{prefix}: done in {time.monotonic() - started:.0f} s")


def collect(sweep: SweepConfig, runs: list[Run]) -> Path:
    """OUT/runs.csv: per finished run its parameters, tokens, FLOPs, held-out losses and
    benchmark accuracies. `params` counts non-embedding weights and `flops` is 6 x params x
    tokens (the convention of the fits); `total_params` counts all weights and `model_flops`
    is jaxslm's exact training count (LM head and attention included). Speech-only runs add
    the per-second-of-audio columns of `per_audio_second`."""
    from jaxslm.model_dir import read_metadata
    from jaxslm.scaling.flops import param_count, train_flops

    rows = []
    for run in runs:
        cfg = load_config(sweep.base, list(run.overrides))
        if not finished(cfg):
            continue
        model, _, _ = read_metadata(cfg.run_dir)
        record = last_record(cfg)
        params, tokens = (
            param_count(model, include_embedding=False),
            run.steps * cfg.tokens_per_step,
        )
        row: dict[str, Any] = {
            "name": run.name,
            "params": params,
            "tokens": tokens,
            "flops": 6 * params * tokens,
            "loss": record["eval_loss"],
            "total_params": param_count(model),
            "model_flops": train_flops(model, cfg.data.batch_size, cfg.data.seq_len) * run.steps,
            "steps": run.steps,
        }
        if cfg.vocab.mode == "speech-only":
            row.update(per_audio_second(cfg, row))
        row.update({k[len("eval_") :]: v for k, v in record.items() if k.startswith("eval_loss_")})
        row.update({k: v for k, v in record.items() if k.endswith("accuracy")})
        rows.append(row)
    if not rows:
        raise JaxslmError(f"{sweep.out}: no finished runs to collect yet")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = io.StringIO()
    writer = csv.DictWriter(table, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return atomic_write_text(Path(sweep.out) / RUNS_FILE, table.getvalue())


def per_audio_second(cfg: TrainConfig, row: dict[str, Any]) -> dict[str, float]:
    """A speech-only run's accounting per second of audio, so that runs over units and over
    unigram tokens share one axis: the corpus's speech tokens per second of audio (train
    split), the audio seconds its tokens hold, its held-out loss in nats per second of audio,
    and its training FLOPs (6 N) per second of audio."""
    from jaxslm.data.corpus import open_corpus

    rate = open_corpus(cfg.data.corpus).speech_tokens_per_second("train")
    return {
        "tokens_per_audio_second": rate,
        "audio_seconds": row["tokens"] / rate,
        "loss_per_audio_second": row["loss"] * rate,
        "flops_per_audio_second": 6 * row["params"] * rate,
    }


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _short(count: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return f"{count:.3g}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `python -m jaxslm.scaling sweep SWEEP.yaml [...]`."""
    parser.add_argument("config", type=Path, help="sweep YAML (see configs/scaling/)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--write-only",
        action="store_true",
        help="write OUT/configs/<run>.yaml and OUT/commands.sh for a scheduler; train nothing",
    )
    mode.add_argument(
        "--collect-only", action="store_true", help="only gather finished runs into OUT/runs.csv"
    )
    parser.add_argument(
        "--fit", action="store_true", help="then fit the scaling laws into OUT/report/"
    )


def run_command(args: argparse.Namespace) -> int:
    """The `sweep` sub-command."""
    sweep = load_sweep(args.config)
    prepare_output_folder(sweep.out)
    runs = plan_runs(sweep)
    if args.write_only:
        print(f"{len(runs)} runs; commands in {write_commands(sweep, runs)}")
        return 0
    if not args.collect_only:
        run_local(sweep, runs)
    table = collect(sweep, runs)
    print(f"results of the finished runs in {table}")
    if args.fit:
        from jaxslm.scaling.__main__ import main as scaling_main

        return scaling_main(["fit", str(table), "--out", str(Path(sweep.out) / "report")])
    return 0
