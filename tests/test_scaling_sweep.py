"""Sweeps: the shape rule hits its parameter targets, the grid and its budgets, configs written
for a scheduler load back, and a two-run sweep trains, skips finished runs and collects."""

import csv
import sys

import pytest

from jaxslm.config import load_config
from jaxslm.data.build import build_synthetic
from jaxslm.data.synthetic import SyntheticConfig
from jaxslm.errors import JaxslmError
from jaxslm.models.config import ModelConfig
from jaxslm.scaling.flops import param_count
from jaxslm.scaling.sweep import (
    SweepConfig,
    collect,
    load_sweep,
    plan_runs,
    run_local,
    shape_for,
    write_commands,
)


@pytest.mark.parametrize("target, head_dim", [(2e4, 16), (1e6, 32), (2e7, 64), (8e8, 128)])
def test_shape_rule_hits_the_target(target, head_dim):
    shape = shape_for(target, aspect=64, head_dim=head_dim, kv_ratio=1)
    cfg = ModelConfig(
        family="llama",
        vocab_size=502,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        **shape,
    )
    assert 0.5 < param_count(cfg, include_embedding=False) / target < 2.0
    assert shape["num_heads"] * shape["head_dim"] == shape["hidden_size"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    config = SyntheticConfig(num_utterances=300, num_text_documents=200, num_validation=20)
    return build_synthetic(tmp_path_factory.mktemp("sweep_corpus") / "toy", config)


def _sweep(corpus, out, **changes):
    base = out.parent / "base.yaml"
    base.write_text(
        f"data:\n  corpus: {corpus}\n  seq_len: 64\n  batch_size: 8\n"
        "model:\n  max_position_embeddings: 256\nschedule:\n  warmup_steps: 0\n"
    )
    fields = dict(
        base=str(base),
        out=str(out),
        params=(2e4, 5e4),
        flops=(3e9,),
        aspect=16,
        head_dim=16,
        kv_ratio=2,
        overrides=("eval.batches=1",),
    )
    return SweepConfig(**{**fields, **changes})


def test_grid_budgets_and_written_configs(corpus, tmp_path):
    sweep = _sweep(corpus, tmp_path / "sweep", tokens_per_param=(1,))
    runs = plan_runs(sweep)
    assert len(runs) == 4
    for run in runs:
        cfg = load_config(sweep.base, list(run.overrides))
        assert cfg.budget.max_steps == run.steps == cfg.eval.every_steps
        assert cfg.run_dir == str(tmp_path / "sweep" / "runs" / run.name)
    by_name = {run.name: run.steps for run in runs}
    assert by_name["N20k_D25.1k"] == round(3e9 / (6 * 2e4) / 512)
    commands = write_commands(sweep, runs).read_text().splitlines()[2:]
    assert len(commands) == 4 and all(line.startswith(sys.executable) for line in commands)
    written = load_config(tmp_path / "sweep" / "configs" / f"{runs[0].name}.yaml")
    assert written == load_config(sweep.base, list(runs[0].overrides))


def test_two_run_sweep_trains_skips_and_collects(corpus, tmp_path):
    sweep = _sweep(corpus, tmp_path / "sweep", flops=(1e9,))
    runs = plan_runs(sweep)
    messages = []
    run_local(sweep, runs, log=messages.append)
    run_local(sweep, runs, log=messages.append)
    assert sum("skipped" in m for m in messages) == 2
    with open(collect(sweep, runs), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == [run.name for run in runs]
    for row, run in zip(rows, runs, strict=True):
        assert int(row["tokens"]) == run.steps * 512
        assert float(row["flops"]) == 6 * int(row["params"]) * int(row["tokens"])
        assert float(row["loss"]) > 0 and float(row["loss_speech"]) > 0


def test_bad_sweep_configs(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("base: x.yaml\nout: o\nparams: [1e5]\nflop: [1e9]\n")
    with pytest.raises(JaxslmError, match="unknown key.*flop"):
        load_sweep(path)
    path.write_text("base: x.yaml\nout: o\nparams: [1e5]\n")
    with pytest.raises(JaxslmError, match="tokens_per_param and/or flops"):
        load_sweep(path)
    with pytest.raises(JaxslmError, match="no such sweep config"):
        load_sweep(tmp_path / "none.yaml")
