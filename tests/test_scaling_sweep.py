"""Sweeps: the shape rule hits its parameter targets, the grid and its budgets, configs written
for a scheduler load back, and a two-run sweep trains, skips finished runs and collects."""

import csv
import json
import sys

import pytest
import yaml

from jaxslm.config import load_config
from jaxslm.data.synthetic import SyntheticConfig
from jaxslm.data.synthetic_corpus import build_synthetic
from jaxslm.errors import JaxslmError
from jaxslm.models.model_config import ModelConfig
from jaxslm.scaling.__main__ import main
from jaxslm.scaling.flops import param_count
from jaxslm.scaling.plots import PLOTS
from jaxslm.scaling.sweep import (
    SweepConfig,
    load_sweep,
    plan_runs,
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
    budgets = []
    for run in runs:
        cfg = load_config(sweep.base, list(run.overrides))
        assert cfg.budget.max_steps == run.steps == cfg.eval.every_steps
        assert cfg.run_dir == str(tmp_path / "sweep" / "runs" / run.name)
        shape = {k: getattr(cfg.model, k) for k in shape_for(2e4, 16, 16, 2)}
        model = ModelConfig(family="llama", vocab_size=502, tie_word_embeddings=True, **shape)
        params, tokens = param_count(model, include_embedding=False), run.steps * 512
        # D is the budget over the shape's real N, to the nearest whole step of 512 tokens.
        budget = 6 * params * tokens
        if abs(budget - 3e9) <= 6 * params * 256:
            budgets.append("flops")
        elif abs(tokens - params) <= 256:
            budgets.append("tokens_per_param")
    assert sorted(budgets) == ["flops", "flops", "tokens_per_param", "tokens_per_param"]
    commands = write_commands(sweep, runs).read_text().splitlines()[2:]
    assert len(commands) == 4 and all(line.startswith(sys.executable) for line in commands)
    written = load_config(tmp_path / "sweep" / "configs" / f"{runs[0].name}.yaml")
    assert written == load_config(sweep.base, list(runs[0].overrides))


def test_sweep_trains_skips_collects_and_fits(corpus, tmp_path, capsys):
    """The sweep command end to end: 3 sizes x 2 IsoFLOP budgets trained, a second call skips
    them all, and --fit writes the report with every plot."""
    sweep = _sweep(corpus, tmp_path / "sweep", params=(2e4, 5e4, 1e5), flops=(1e9, 2e9))
    config = tmp_path / "sweep.yaml"
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(sweep).items()}
    config.write_text(yaml.safe_dump(fields))
    runs = plan_runs(sweep)
    assert main(["sweep", str(config)]) == 0
    assert main(["sweep", str(config), "--fit"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished, skipped") == len(runs) == 6
    with open(tmp_path / "sweep" / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == [run.name for run in runs]
    for row, run in zip(rows, runs, strict=True):
        assert int(row["tokens"]) == run.steps * 512
        assert float(row["flops"]) == 6 * int(row["params"]) * int(row["tokens"])
        assert float(row["loss"]) > 0 and float(row["loss_speech"]) > 0
        assert (tmp_path / "sweep" / "logs" / f"{run.name}.log").stat().st_size > 0
    report = tmp_path / "sweep" / "report"
    assert json.loads((report / "fit.json").read_text())["n_runs"] == 6
    for name in (*PLOTS, "summary.md"):
        assert (report / name).stat().st_size > 0, name


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
    path.write_text("base: x.yaml\nout: o\nparams: [1e5]\nflops: [1e9]\n")
    with pytest.raises(JaxslmError, match=r"sweep.yaml: base: x.yaml is not a file .*current"):
        load_sweep(path)


def test_a_bad_override_of_a_sweep_is_named_as_the_sweeps(corpus, tmp_path):
    sweep = _sweep(corpus, tmp_path / "sweep", overrides=("optimizer.learning_rate=1",))
    with pytest.raises(JaxslmError, match="the sweep's overrides: unknown key"):
        plan_runs(sweep)


def test_finished_run_with_a_half_written_last_line(tmp_path):
    """A kill while a metrics record was being appended leaves a broken last line: the run's
    last complete record still decides whether it finished."""
    from jaxslm.scaling.sweep import finished

    cfg = load_config(None, [f"run_dir={tmp_path}", "budget.max_steps=2"])
    records = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5, "eval_loss": 2.6}]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records) + '{"step": 3, "lo'
    )
    with pytest.warns(UserWarning):
        assert finished(cfg)


def test_qwen2_shapes_count_their_biases():
    """A qwen2 sweep base counts each layer's q/k/v biases (it used to be refused)."""
    from jaxslm.scaling.sweep import shape_for, shape_params

    shape = shape_for(1e6, 64, 32, 1)
    biases = (
        shape["num_layers"] * shape["head_dim"] * (shape["num_heads"] + 2 * shape["num_kv_heads"])
    )
    assert shape_params(shape, "qwen2") == shape_params(shape, "llama") + biases
