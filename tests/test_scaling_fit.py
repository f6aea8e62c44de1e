"""Scaling-law fits against published numbers and known laws: Epoch AI's refit of Chinchilla's
runs, synthetic runs drawn from a law (recovered within bootstrap intervals), exact IsoFLOP
parabolas, the compute-optimal allocation, the plan, and the report command with bad tables."""

import csv
import itertools
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from jaxslm.config import load_config
from jaxslm.errors import JaxslmError
from jaxslm.scaling import sweep
from jaxslm.scaling.__main__ import build_parser, main, run_fit
from jaxslm.scaling.fit import fit_law
from jaxslm.scaling.isoflop import group_budgets, isoflop_fit
from jaxslm.scaling.law import Law, effective_tokens, epoch_grid, value_and_grad
from jaxslm.scaling.optimal import budget_flops, compute_optimal, exponents, plan
from jaxslm.scaling.plots import PLOTS
from jaxslm.scaling.report import analyse
from jaxslm.scaling.report_files import read_fit
from jaxslm.scaling.runs_table import read_runs

ROOT = Path(__file__).resolve().parents[1]
# Epoch AI's extraction of Chinchilla's runs (github.com/epoch-research/analyzing-chinchilla,
# data/svg_extracted_data.csv): not vendored here; the refit test runs where it is given.
CHINCHILLA = Path(os.environ.get("JAXSLM_CHINCHILLA_CSV", "/nonexistent"))
EPOCH = Law(E=1.8172, A=477.84, B=2143.86, alpha=0.3473, beta=0.3672)
TRUE = Law(E=1.8, A=400.0, B=1800.0, alpha=0.34, beta=0.36)
NAMES = ("E", "A", "B", "alpha", "beta")


@pytest.mark.skipif(
    not CHINCHILLA.is_file(),
    reason="set JAXSLM_CHINCHILLA_CSV to Epoch AI's svg_extracted_data.csv",
)
def test_chinchilla_refit_matches_epoch_ai():
    """Its README's preparation (drop the 5 highest losses, D = C / 6N), 4,500 starts, delta
    1e-3, summed: E, alpha, beta within 1% and A, B within 5% of Epoch AI's refit."""
    with open(CHINCHILLA, newline="") as handle:
        rows = list(csv.DictReader(handle))
    n, c, loss = (
        np.array([float(r[k]) for r in rows]) for k in ("Model Size", "Training FLOP", "loss")
    )
    keep = loss < np.sort(loss)[-5]
    fit = fit_law(n[keep], c[keep] / (6 * n[keep]), loss[keep], delta=1e-3)
    assert fit.n_runs == 240 and fit.n_starts == len(epoch_grid()) == 4500
    for name, tolerance in zip(NAMES, (0.01, 0.05, 0.05, 0.01, 0.01), strict=True):
        published = getattr(EPOCH, name)
        assert getattr(fit.law, name) == pytest.approx(published, rel=tolerance), name
    assert fit.objective < 0.0010182741  # Epoch's best: 0.0010182740346


@pytest.mark.parametrize("repeated", [False, True])
def test_hand_written_gradient_matches_autodiff(repeated):
    """value_and_grad: the Huber sum of log-loss residuals, and autodiff's gradient of it."""
    rng = np.random.default_rng(1)
    n, loss, weights = (
        np.exp(rng.uniform(18, 23, 30)),
        rng.uniform(1.8, 3.3, 30),
        rng.integers(0, 3, 30),
    )
    data = {"log_n": np.log(n), "log_loss": np.log(loss)}
    tokens, theta = np.exp(rng.uniform(19, 26, 30)), [6.0, 7.5, 0.5, 0.33, 0.35]
    if repeated:
        unique, repeats = tokens, rng.choice([0.0, 1, 3, 30], 30)
        data.update(log_u=np.log(unique), repeats=repeats)
        theta.append(np.log(12.0))
        tokens = effective_tokens(unique * (1 + repeats), unique, 12.0)
    else:
        data["log_d"] = np.log(tokens)
    residual = np.log(Law.from_theta(theta).loss(n, tokens) / loss)
    huber = np.where(np.abs(residual) <= 0.05, residual**2 / 2, 0.05 * (np.abs(residual) - 0.025))
    with jax.enable_x64(True):
        args = ({k: jnp.asarray(v) for k, v in data.items()}, jnp.asarray(weights, float), 0.05)
        value, grad = jax.jit(value_and_grad)(jnp.asarray(theta), *args)
        auto = jax.jit(jax.grad(lambda t: value_and_grad(t, *args)[0]))(jnp.asarray(theta))
    assert float(value) == pytest.approx(np.sum(weights * huber), rel=1e-12)
    np.testing.assert_allclose(grad, auto, rtol=1e-12)


def synthetic_runs(seed: int = 0, noise: float = 0.01):
    """64 runs of TRUE over 8 sizes x 8 tokens-per-parameter ratios, with lognormal noise."""
    n = np.repeat(np.geomspace(5e7, 5e9, 8), 8)
    d = n * np.tile(np.geomspace(2, 200, 8), 8)
    rng = np.random.default_rng(seed)
    return n, d, TRUE.loss(n, d) * np.exp(rng.normal(0, noise, n.size))


def test_known_law_recovered_within_bootstrap_intervals():
    n, d, loss = synthetic_runs()
    fit = fit_law(n, d, loss, bootstrap=50, seed=0)
    assert jnp.zeros(1).dtype == jnp.float32  # float64 stayed inside the fit
    assert len(fit.samples) == 50
    for name in NAMES:
        lo, hi = fit.intervals[name]
        assert lo <= getattr(TRUE, name) <= hi, (name, lo, hi)
        assert lo <= getattr(fit.law, name) <= hi, name
    a, b = exponents(TRUE)
    assert fit.intervals["n_opt_exponent"][0] <= a <= fit.intervals["n_opt_exponent"][1]
    assert fit.intervals["d_opt_exponent"][0] <= b <= fit.intervals["d_opt_exponent"][1]


def test_multi_epoch_effective_data_and_fitted_r_star():
    """Noise-free runs with up to 64 epochs: R* (fitted) and the law come back exactly."""
    n = np.repeat(np.geomspace(5e7, 2e9, 6), 8)
    unique = np.tile(np.geomspace(1e9, 2e10, 4), 12)
    tokens = unique * np.tile(np.repeat([1.0, 4.0, 16.0, 64.0], 2), 6)
    loss = TRUE.loss(n, effective_tokens(tokens, unique, 15.0))
    assert effective_tokens(unique, unique, 15.0) == pytest.approx(unique)  # one epoch: D' = D
    grid = np.array(list(itertools.product([0, 10], [0, 10], [-1, 1], [0.5], [0.5])), float)
    fit = fit_law(n, tokens, loss, unique_tokens=unique, grid=grid)
    assert fit.r_star == pytest.approx(15.0, rel=1e-3) and fit.theta.shape == (6,)
    for name in NAMES:
        assert getattr(fit.law, name) == pytest.approx(getattr(TRUE, name), rel=1e-3), name


def test_isoflop_minima_of_exact_parabolas_are_exact():
    budgets = np.array([1e18, 1e19, 1e20, 1e21])
    n_opt = 0.09 * budgets**0.52
    rows = []
    for c, best in zip(budgets, n_opt, strict=True):
        for offset in np.linspace(-1.5, 1.2, 7):  # asymmetric sizes around the minimum
            n = best * np.exp(offset)
            rows.append((n, c, 2.0 + 10 / np.log(c) + 0.05 * (np.log(n) - np.log(best)) ** 2))
    params, flops, loss = map(np.array, zip(*rows, strict=True))
    iso = isoflop_fit(params, loss, flops)
    assert len(iso.curves) == 4 and not iso.skipped
    for curve, best, c in zip(iso.curves, n_opt, budgets, strict=True):
        assert curve.n_opt == pytest.approx(best, rel=1e-9)
        assert curve.d_opt == pytest.approx(c / (6 * best), rel=1e-9)
        assert curve.loss_opt == pytest.approx(2.0 + 10 / np.log(c), rel=1e-12)
    assert iso.n_opt.exponent == pytest.approx(0.52, rel=1e-9)
    assert iso.d_opt.exponent == pytest.approx(0.48, rel=1e-9)


def test_group_budgets_by_relative_gap():
    labels = group_budgets([1.0e20, 1.03e20, 3e20, 0.99e20, 3.1e20, 1e21], rtol=0.05)
    assert labels.tolist() == [0, 0, 1, 0, 1, 2]


def test_compute_optimal_allocation_minimises_the_law_at_fixed_compute():
    n_opt, d_opt = compute_optimal(TRUE, np.array([1e20, 1e22]))
    assert 6 * n_opt * d_opt == pytest.approx([1e20, 1e22])
    for c, n in zip([1e20, 1e22], n_opt, strict=True):
        sizes = n * np.array([0.97, 1.0, 1.03])
        assert np.argmin(TRUE.loss(sizes, c / (6 * sizes))) == 1
    a, b = exponents(TRUE)
    assert a == pytest.approx(0.36 / 0.70) and a + b == pytest.approx(1.0)
    assert np.log(n_opt[1] / n_opt[0]) / np.log(100) == pytest.approx(a)


def test_plan_from_gpu_hours_gives_a_loadable_config(capsys):
    assert budget_flops("h100", 8, 24, mfu=0.4) == pytest.approx(989e12 * 0.4 * 8 * 24 * 3600)
    assert main(["plan", "--gpu", "h100", "--count", "8", "--hours", "24", "--law", "speech"]) == 0
    printed = capsys.readouterr().out
    snippet = yaml.safe_load(printed.split("config:\n", 1)[1])
    result = plan(Law(E=1.73, A=13.9, B=39.8, alpha=0.25, beta=0.24), budget_flops("h100", 8, 24))
    assert f"N_opt = {result.n_opt:.4g}" in printed and snippet["model"] == result.shape
    assert 0.8 < result.shape_params / result.n_opt < 1.25
    overrides = [
        f"{section}.{key}={value}"
        for section, keys in snippet.items()
        for key, value in keys.items()
    ]
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides)
    assert cfg.budget.train_max_tokens == round(result.d_opt)


def test_sub_commands_register_themselves():
    parser = build_parser()
    assert parser.parse_args(["sweep", "s.yaml", "--write-only"]).handler is sweep.run_command
    assert parser.parse_args(["fit", "runs.csv", "--out", "r"]).handler is run_fit


def write_table(path: Path, columns: dict[str, list]) -> Path:
    names = list(columns)
    lines = [",".join(names)] + [
        ",".join(str(v) for v in row) for row in zip(*columns.values(), strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_command_writes_the_report(tmp_path, capsys):
    n, d, loss = synthetic_runs()
    accuracy = 0.9 - 0.2 * (loss - loss.min())
    table = write_table(
        tmp_path / "runs.csv",
        {
            "name": [f"run{i}" for i in range(n.size)],
            "params": n,
            "tokens": d,
            "loss": loss,
            "flops": 6 * n * d,
            "accuracy": accuracy,
            "notes": ["x"] * n.size,
            "steps": np.arange(n.size) + 1,
        },
    )
    out = tmp_path / "report"
    assert main(["fit", str(table), "--out", str(out), "--bootstrap", "50"]) == 0
    fitted = json.loads((out / "fit.json").read_text())
    for key in (
        *NAMES,
        "a",
        "b",
        "e",
        "objective",
        "n_runs",
        "intervals",
        "settings",
        "compute_optimal",
        "isoflop",
        "downstream",
    ):
        assert key in fitted, key
    assert fitted["n_runs"] == 64 and fitted["settings"]["bootstrap"] == 50
    assert list(fitted["downstream"]) == ["accuracy"]  # text and bookkeeping columns skipped
    assert fitted["downstream"]["accuracy"]["slope"] == pytest.approx(-0.2)
    law, flops_range, flops_per_nd = read_fit(out)
    assert law == Law(**{k: fitted[k] for k in NAMES})
    assert flops_range == pytest.approx(((6 * n * d).min(), (6 * n * d).max()))
    assert flops_per_nd == 6.0
    budget = 1000 * flops_range[1]
    assert main(["plan", "--flops", str(budget), "--fit", str(out)]) == 0
    assert "extrapolates the law far beyond them" in capsys.readouterr().out
    assert main(["plan", "--flops", str(flops_range[1]), "--fit", str(out)]) == 0
    assert "warning" not in capsys.readouterr().out
    for name in (*PLOTS, "metrics.png", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    assert "| alpha |" in (out / "summary.md").read_text()
    # Any existing folder other than a previous report is refused, before fitting.
    assert main(["fit", str(table), "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


GOOD = {
    "params": [1e8, 2e8, 4e8, 8e8, 1.6e9],
    "tokens": [1e9, 3e9, 1e10, 3e10, 1e11],
    "loss": [3.1, 2.9, 2.7, 2.6, 2.5],
}


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"loss": None}, ["missing column(s) loss"]),
        (
            {"params": ["1e8", "big", 4e8, 8e8, 1.6e9]},
            ["line 3", "'params'", "'big' is not a number"],
        ),
        ({"tokens": [1e9, 3e9, -1, 3e10, 1e11]}, ["line 4", "'tokens'", "positive"]),
        ({"loss": [3.1, 2.9, 2.7, "nan", 2.5]}, ["line 5", "'loss'", "NaN"]),
        ({"loss": [3.1, 2.9, 2.7, "", 2.5]}, ["line 5", "'loss'", "missing"]),
        ({"flops": [1, 1, 0, 1, 1]}, ["line 4", "'flops'", "positive"]),
        ({"epochs": [1, 1, 1, 0.5, 1]}, ["run 4 (line 5)", "'epochs'", ">= 1"]),
        ({"unique_tokens": [1e9, 4e9, 1e9, 1e9, 1e9]}, ["line 3", "more unique tokens"]),
        (
            {"params": GOOD["params"][:4], "tokens": GOOD["tokens"][:4], "loss": GOOD["loss"][:4]},
            ["4 runs", "at least 5"],
        ),
    ],
)
def test_bad_tables_fail_clearly(tmp_path, capsys, change, fragments):
    columns = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    table = write_table(tmp_path / "runs.csv", columns)
    out = tmp_path / "report"
    assert main(["fit", str(table), "--out", str(out)]) == 2
    message = capsys.readouterr().err
    assert message.startswith(f"error: {table}") and message.count("\n") == 1, message
    for fragment in fragments:
        assert fragment in message, message
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["runs.csv"]


def test_a_json_file_is_not_read_as_a_table(tmp_path, capsys):
    report = tmp_path / "fit.json"
    report.write_text(json.dumps({"E": 1.7, "A": 400.0, "alpha": 0.34}, indent=2))
    assert main(["fit", str(report), "--out", str(tmp_path / "report")]) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1, message
    assert message.startswith(f"error: {report}: JSON, not a CSV table of runs"), message
    assert "columns params, tokens, loss" in message and "plan --fit" in message
    assert [p.name for p in tmp_path.iterdir()] == ["fit.json"]


def test_blank_lines_keep_the_line_numbers_right(tmp_path, capsys):
    table = write_table(tmp_path / "runs.csv", {**GOOD, "tokens": [1e9, 3e9, 1e10, -1, 1e11]})
    header, *rows = table.read_text().splitlines()
    table.write_text("\n".join([header, rows[0], "", rows[1], rows[2], rows[3], rows[4]]) + "\n")
    assert main(["fit", str(table), "--out", str(tmp_path / "report")]) == 2
    assert "run 4 (line 6), column 'tokens'" in capsys.readouterr().err


def test_undetermined_terms_are_warned(tmp_path, capsys):
    """Two model sizes leave A and alpha undetermined; a law without E drives E to zero."""
    n = np.repeat([1e8, 4e8], 4)
    d = np.tile([1e9, 3e9, 1e10, 3e10], 2)
    table = write_table(tmp_path / "runs.csv", {"params": n, "tokens": d, "loss": TRUE.loss(n, d)})
    assert main(["fit", str(table), "--out", str(tmp_path / "r"), "--bootstrap", "0"]) == 0
    warned = capsys.readouterr().err
    assert "only 2 distinct params value(s): A, alpha are poorly determined" in warned
    fitted = json.loads((tmp_path / "r" / "fit.json").read_text())
    assert fitted["warnings"] == [w[len("warning: ") :] for w in warned.splitlines()]
    assert "## Warnings" in (tmp_path / "r" / "summary.md").read_text()
    no_floor = Law(E=1e-9, A=400.0, B=1800.0, alpha=0.34, beta=0.36)
    n, d = synthetic_runs()[:2]
    table = write_table(
        tmp_path / "runs2.csv", {"params": n, "tokens": d, "loss": no_floor.loss(n, d)}
    )
    assert main(["fit", str(table), "--out", str(tmp_path / "r2"), "--bootstrap", "0"]) == 0
    assert "is near zero" in capsys.readouterr().err


def test_missing_table_and_too_many_dropped(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "none.csv"), "--out", str(tmp_path / "r")]) == 2
    assert "no such runs table" in capsys.readouterr().err
    table = write_table(tmp_path / "runs.csv", {**GOOD, "epochs": [1, 1, 2, 1, 1]})
    assert main(["fit", str(table), "--out", str(tmp_path / "r"), "--drop-highest-loss", "1"]) == 2
    assert "4 runs after dropping 1" in capsys.readouterr().err
    with pytest.raises(JaxslmError, match="at least 6 runs"):  # R* fitted: 6 parameters
        analyse(read_runs(table))


def test_fit_per_audio_second(tmp_path, capsys):
    """--per-audio-second fits the law over audio seconds and nats per second (noise-free runs
    drawn from TRUE in those units recover it), while C stays 6 N x tokens."""
    n, seconds, _ = synthetic_runs(noise=0.0)
    tokens = 12.5 * seconds  # 12.5 speech tokens per second of audio
    columns = {"params": n, "tokens": tokens, "loss": np.full(n.size, 9.0)}
    columns |= {"audio_seconds": seconds, "loss_per_audio_second": TRUE.loss(n, seconds)}
    columns |= {"tokens_per_audio_second": np.full(n.size, 12.5)}
    table = write_table(tmp_path / "runs.csv", columns)
    runs = read_runs(table, per_audio_second=True)
    np.testing.assert_allclose(runs.tokens, seconds)
    np.testing.assert_allclose(runs.flops, 6 * n * tokens)
    assert runs.metrics == {}  # the per-second columns are not downstream metrics
    out = tmp_path / "report"
    assert (
        main(["fit", str(table), "--out", str(out), "--bootstrap", "0", "--per-audio-second"]) == 0
    )
    fitted = json.loads((out / "fit.json").read_text())
    for name in NAMES:
        assert fitted[name] == pytest.approx(getattr(TRUE, name), rel=1e-2), name
    # compute-optimal over audio: C = 6 N x tokens = 75 N x seconds, minimised by brute force
    assert fitted["compute_optimal"]["flops_per_nd"] == pytest.approx(75.0)
    budget, sizes = 1e18, np.geomspace(1e5, 1e11, 200_001)
    want = sizes[np.argmin(TRUE.loss(sizes, budget / (75 * sizes)))]
    law = Law(**{name: fitted[name] for name in NAMES})
    assert float(compute_optimal(law, budget, 75.0)[0]) == pytest.approx(want, rel=0.02)
    assert main(["plan", "--fit", str(out), "--flops", "1e18"]) == 0
    printed = capsys.readouterr().out
    seconds_opt = float(compute_optimal(law, budget, 75.0)[1])
    assert f"{seconds_opt:.4g} s of audio = {12.5 * seconds_opt:.4g} tokens" in printed
    assert f"train_max_tokens: {round(12.5 * seconds_opt)}" in printed
    columns.pop("audio_seconds")
    write_table(table, columns)
    assert main(["fit", str(table), "--out", str(out), "--per-audio-second"]) == 2
    assert "missing column(s) audio_seconds" in capsys.readouterr().err
