"""The scaling report of a runs table: every fit, DIR/fit.json, DIR/summary.md and PNG plots.

RUNS.csv has one row per training run with columns `params` (N), `tokens` (D) and `loss`, and
optionally `flops` (C; else 6 N D), `unique_tokens` or `epochs` (multi-epoch data) and metric
columns. Every other numeric column is a downstream metric (an empty cell: not measured for that
run), except names and the bookkeeping columns sweeps write (`total_params`, `model_flops`,
`steps`). Text columns are ignored.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_directory
from jaxslm.scaling.fit import LawFit, fit_law
from jaxslm.scaling.isoflop import IsoFlopFit, isoflop_fit, power_law
from jaxslm.scaling.law import Law, effective_tokens
from jaxslm.scaling.optimal import allocation_coefficient, compute_optimal, exponents
from jaxslm.textfiles import read_utf8

REQUIRED = ("params", "tokens", "loss")
NOT_METRICS = {
    *REQUIRED,
    "flops",
    "epochs",
    "unique_tokens",
    "name",
    "run",
    "total_params",
    "model_flops",
    "steps",
}
PLOTS = (
    "loss_vs_compute.png",
    "isoflop.png",
    "optimal_allocation.png",
    "predicted_vs_observed.png",
)
METRICS_PLOT = "metrics.png"


@dataclass(frozen=True)
class RunTable:
    """The runs of a table: arrays over runs, metrics with NaN where not measured."""

    path: str
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    flops: np.ndarray
    unique_tokens: np.ndarray | None = None
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.loss)

    def drop_highest_loss(self, count: int) -> RunTable:
        """The table without its `count` highest-loss runs."""
        keep = np.sort(np.argsort(self.loss, kind="stable")[: len(self) - count])
        return RunTable(
            self.path,
            self.params[keep],
            self.tokens[keep],
            self.loss[keep],
            self.flops[keep],
            None if self.unique_tokens is None else self.unique_tokens[keep],
            {name: values[keep] for name, values in self.metrics.items()},
        )


def _number(path: Path, line: int, column: str, text: str | None) -> float:
    """A positive finite number from one cell, or an error naming the file, line and column."""
    where = f"{path}, run {line - 1} (line {line}), column {column!r}"
    if text is None or not text.strip():
        raise JaxslmError(f"{where}: the value is missing")
    try:
        value = float(text)
    except ValueError:
        raise JaxslmError(f"{where}: {text!r} is not a number") from None
    if math.isnan(value):
        raise JaxslmError(f"{where}: the value is NaN")
    if not (value > 0 and math.isfinite(value)):
        raise JaxslmError(f"{where}: {text!r} must be a positive finite number")
    return value


def read_runs(path: str | Path) -> RunTable:
    """Read and check RUNS.csv; errors name the file, the line and the column."""
    path = Path(path)
    if not path.is_file():
        raise JaxslmError(f"{path}: no such runs table")
    reader = csv.DictReader(io.StringIO(read_utf8(path, "runs table"), newline=""))
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        rows = [{k.strip(): v for k, v in row.items() if k is not None} for row in reader]
    except csv.Error as err:
        raise JaxslmError(f"{path}, line {reader.line_num}: not a CSV table ({err})") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise JaxslmError(
            f"{path}: missing column(s) {', '.join(missing)} (found: "
            f"{', '.join(columns) or 'none'}); required: {', '.join(REQUIRED)}"
        )
    if not rows:
        raise JaxslmError(f"{path}: no runs, only the header; add one row per run")
    numeric = [c for c in REQUIRED + ("flops", "epochs", "unique_tokens") if c in columns]
    values = {
        c: np.array([_number(path, i + 2, c, row[c]) for i, row in enumerate(rows)])
        for c in numeric
    }
    unique = values.get("unique_tokens")
    if unique is None and "epochs" in values:
        bad = np.flatnonzero(values["epochs"] < 1)
        if len(bad):
            raise JaxslmError(
                f"{path}, run {bad[0] + 1} (line {bad[0] + 2}), column 'epochs': must be >= 1"
            )
        unique = values["tokens"] / values["epochs"]
    if unique is not None:
        bad = np.flatnonzero(unique > values["tokens"] * (1 + 1e-9))
        if len(bad):
            raise JaxslmError(
                f"{path}, line {bad[0] + 2}, column 'unique_tokens': more unique tokens than tokens"
            )
        unique = np.minimum(unique, values["tokens"])
        if np.allclose(unique, values["tokens"]):
            unique = None  # no run repeats data: the plain law
    flops = values.get("flops", 6 * values["params"] * values["tokens"])
    return RunTable(
        str(path),
        values["params"],
        values["tokens"],
        values["loss"],
        flops,
        unique,
        _metrics(rows, columns),
    )


def _metrics(rows: list[dict[str, str]], columns: list[str]) -> dict[str, np.ndarray]:
    """Columns whose non-empty cells are all numbers; empty cells become NaN."""
    out = {}
    for column in columns:
        if column in NOT_METRICS:
            continue
        cells = [(row.get(column) or "").strip() for row in rows]
        try:
            values = np.array([float(c) if c else math.nan for c in cells])
        except ValueError:
            continue
        if np.isfinite(values).any():
            out[column] = values
    return out


@dataclass(frozen=True)
class Downstream:
    """A metric Q: Q ~ k C^gamma (when Q > 0) and Q = slope x loss + intercept."""

    runs: int
    gamma: float | None
    k: float | None
    slope: float
    intercept: float
    correlation: float

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def downstream_fit(metric: np.ndarray, flops: np.ndarray, loss: np.ndarray) -> Downstream | None:
    """Fits of one metric over the runs where it was measured (None below 3 runs)."""
    ok = np.isfinite(metric)
    if ok.sum() < 3 or np.ptp(metric[ok]) == 0 or np.ptp(loss[ok]) == 0:
        return None
    q, c, loss = metric[ok], flops[ok], loss[ok]
    law = power_law(c, q) if np.all(q > 0) and np.ptp(c) > 0 else None
    slope, intercept = np.polyfit(loss, q, 1)
    return Downstream(
        runs=int(ok.sum()),
        gamma=None if law is None else law.exponent,
        k=None if law is None else law.k,
        slope=float(slope),
        intercept=float(intercept),
        correlation=float(np.corrcoef(loss, q)[0, 1]),
    )


@dataclass(frozen=True)
class Report:
    """Everything fitted from one runs table."""

    table: RunTable
    dropped: int
    law: LawFit
    isoflop: IsoFlopFit
    downstream: dict[str, Downstream]
    settings: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The content of fit.json."""
        a, b = exponents(self.law.law)
        return {
            **self.law.to_dict(),
            "runs_file": self.table.path,
            "runs_flops": [float(self.table.flops.min()), float(self.table.flops.max())],
            "n_dropped": self.dropped,
            "compute_optimal": {
                "n_opt_exponent": a,
                "d_opt_exponent": b,
                "G": allocation_coefficient(self.law.law),
                "formula": "N_opt = G (C/6)^a, D_opt = (C/6)^b / G",
            },
            "isoflop": self.isoflop.to_dict(),
            "downstream": {name: fit.to_dict() for name, fit in self.downstream.items()},
            "settings": self.settings,
            "warnings": self.warnings,
        }


def analyse(
    table: RunTable,
    *,
    delta: float = 1e-3,
    bootstrap: int = 100,
    seed: int = 0,
    drop_highest_loss: int = 0,
    r_star: float | None = None,
    isoflop_rtol: float = 0.05,
) -> Report:
    """Approach 3 (with bootstrap intervals), Approach 2 and downstream fits of `table`."""
    if not 0 <= drop_highest_loss < len(table):
        raise JaxslmError(
            f"--drop-highest-loss {drop_highest_loss}: the table has {len(table)} runs"
        )
    runs = table.drop_highest_loss(drop_highest_loss)
    needed = 6 if runs.unique_tokens is not None and r_star is None else 5
    if len(runs) < needed:
        raise JaxslmError(
            f"{table.path}: {len(runs)} runs after dropping {drop_highest_loss}; "
            f"fitting {needed} parameters needs at least {needed} runs"
        )
    law = fit_law(
        runs.params,
        runs.tokens,
        runs.loss,
        delta=delta,
        bootstrap=bootstrap,
        seed=seed,
        unique_tokens=runs.unique_tokens,
        r_star=r_star,
    )
    iso = isoflop_fit(runs.params, runs.loss, runs.flops, isoflop_rtol)
    downstream = {}
    for name, values in runs.metrics.items():
        fitted = downstream_fit(values, runs.flops, runs.loss)
        if fitted is not None:
            downstream[name] = fitted
    settings = {
        "delta": delta,
        "bootstrap": bootstrap,
        "seed": seed,
        "drop_highest_loss": drop_highest_loss,
        "grid": "epoch_grid: alpha, beta 0-2 by 0.5; e -1-1 by 0.5; a, b 0-25 by 5",
        "isoflop_rtol": isoflop_rtol,
        "r_star": r_star,
    }
    return Report(runs, drop_highest_loss, law, iso, downstream, settings, fit_warnings(runs, law))


def fit_warnings(runs: RunTable, fit: LawFit) -> list[str]:
    """What the runs leave undetermined: too few distinct N or D for a term, or an irreducible
    loss E driven to zero (the runs never flatten out)."""
    out = []
    for column, values, term in (
        ("params", runs.params, "A, alpha"),
        ("tokens", runs.tokens, "B, beta"),
    ):
        distinct = len(np.unique(values))
        if distinct < 3:
            out.append(
                f"only {distinct} distinct {column} value(s): {term} are poorly determined; "
                f"add runs at other {column}"
            )
    if fit.law.E / runs.loss.min() < 1e-3:
        out.append(
            f"E = {fit.law.E:.3g} is near zero: the runs do not determine the irreducible loss "
            "(add larger models or longer runs); predictions beyond the runs are unreliable"
        )
    return out


def write_report(report: Report, out_dir: str | Path, overwrite: bool = False) -> Path:
    """DIR/fit.json, DIR/summary.md and the plots, all appearing at once (or not at all)."""
    with atomic_directory(out_dir, overwrite) as staging:
        (staging / "fit.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        plots = _plots(report, staging)
        (staging / "summary.md").write_text(summary(report, plots))
    return Path(out_dir)


def read_fit(path: str | Path) -> tuple[Law, tuple[float, float] | None]:
    """The law E, A, B, alpha, beta of a report's fit.json (or of the folder holding it), and
    the smallest and largest compute of the runs it was fitted on (None if not recorded)."""
    path = Path(path)
    path = path / "fit.json" if path.is_dir() else path
    if not path.is_file():
        raise JaxslmError(f"{path}: no such fit.json")
    try:
        values = json.loads(read_utf8(path, "fit.json"))
    except json.JSONDecodeError as err:
        raise JaxslmError(f"{path}: not a JSON file ({err})") from None
    if not isinstance(values, dict):
        raise JaxslmError(
            f"{path}: holds a JSON {type(values).__name__}, not an object; is it a fit.json?"
        )
    names = ("E", "A", "B", "alpha", "beta")
    missing = [k for k in names if not isinstance(values.get(k), (int, float))]
    if missing:
        raise JaxslmError(f"{path}: no number for {', '.join(missing)}; is it a fit.json?")
    flops = values.get("runs_flops")
    return Law(**{k: float(values[k]) for k in names}), None if flops is None else tuple(flops)


def summary(report: Report, plots: list[str]) -> str:
    """The markdown summary."""
    fit, law = report.law, report.law.law
    a, b = exponents(law)
    lines = [
        "# Scaling-law fit",
        "",
        f"Runs: {fit.n_runs} from `{report.table.path}`"
        + (f" ({report.dropped} highest-loss runs dropped)" if report.dropped else "")
        + ".",
        "",
        "## Approach 3: L(N, D) = E + A / N^alpha + B / D^beta",
        "",
        f"Summed Huber loss (delta {fit.delta:g}) of log-loss residuals, L-BFGS from "
        f"{fit.n_starts} starts in float32 ("
        + ", ".join(f"{count} {how}" for how, count in fit.grid_pass.items() if count)
        + "; stalled: no step lowered the objective at float32 resolution), the best endpoints "
        "continued in float64; objective "
        f"{fit.objective:.10g}, best start (a, b, e, alpha, beta"
        + (", log R*" if fit.r_star is not None else "")
        + f") = {', '.join(f'{v:g}' for v in fit.start)}.",
        "",
    ]
    names = ["E", "A", "B", "alpha", "beta"] + (["r_star"] if fit.r_star is not None else [])
    values = {**law.to_dict(), "r_star": fit.r_star}
    interval_head = (
        f" {round(100 * fit.ci)}% interval ({len(fit.samples)} resamples) |"
        if fit.intervals
        else ""
    )
    lines += [
        f"| parameter | value |{interval_head}",
        "|---|---|" + ("---|" if fit.intervals else ""),
    ]
    for name in names:
        row = f"| {name} | {values[name]:.5g} |"
        if fit.intervals and name in fit.intervals:
            lo, hi = fit.intervals[name]
            row += f" {lo:.5g} - {hi:.5g} |"
        elif fit.intervals:
            row += " given |"
        lines.append(row)
    lines += [
        "",
        "## Compute-optimal allocation",
        "",
        f"N_opt ~ C^{a:.4f} and D_opt ~ C^{b:.4f} (Approach 3).",
    ]
    iso = report.isoflop
    if iso.n_opt is not None and iso.d_opt is not None:
        lines.append(
            f"IsoFLOP (Approach 2): N_opt ~ C^{iso.n_opt.exponent:.4f}, D_opt ~ "
            f"C^{iso.d_opt.exponent:.4f} over {len(iso.curves)} budgets."
        )
    if iso.curves:
        lines += [
            "",
            "| budget C | runs | N_opt (IsoFLOP) | N_opt (Approach 3) | loss at N_opt |",
            "|---|---|---|---|---|",
        ]
        for curve in iso.curves:
            law_n = float(compute_optimal(law, curve.flops)[0])
            lines.append(
                f"| {curve.flops:.3g} | {len(curve.params)} | {curve.n_opt:.4g} | "
                f"{law_n:.4g} | {curve.loss_opt:.4g} |"
            )
    else:
        lines.append("No IsoFLOP budget has 3 or more model sizes.")
    lines += [f"- skipped budget {note}" for note in iso.skipped]
    if report.downstream:
        lines += [
            "",
            "## Downstream metrics",
            "",
            "| metric | runs | gamma (Q ~ C^gamma) | Q vs loss: slope | intercept | r |",
            "|---|---|---|---|---|---|",
        ]
        for name, down in report.downstream.items():
            gamma = "-" if down.gamma is None else f"{down.gamma:.4g}"
            lines.append(
                f"| {name} | {down.runs} | {gamma} | {down.slope:.4g} | "
                f"{down.intercept:.4g} | {down.correlation:.3f} |"
            )
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {warning}" for warning in report.warnings]
    lines += ["", "## Plots", ""] + [f"- [{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _plots(report: Report, out: Path) -> list[str]:
    """Write every plot into `out` (matplotlib figures without pyplot: no global backend);
    returns the file names."""
    from matplotlib.figure import Figure

    plots = [
        (PLOTS[0], (6.5, 4.5), _plot_loss_vs_compute),
        (PLOTS[1], (6.5, 4.5), _plot_isoflop),
        (PLOTS[2], (10, 4), _plot_optimal),
        (PLOTS[3], (5, 5), _plot_predicted),
    ]
    if report.downstream:
        plots.append((METRICS_PLOT, (10, 3.5 * len(report.downstream)), _plot_metrics))
    for name, size, draw in plots:
        figure = Figure(figsize=size)
        draw(report, figure)
        figure.tight_layout()
        figure.savefig(out / name, dpi=120)
    return [name for name, _, _ in plots]


def _budgets(report: Report) -> np.ndarray:
    """Compute budgets spanning the runs and a decade and a half beyond."""
    return np.geomspace(report.table.flops.min() / 3, report.table.flops.max() * 30, 100)


def _plot_loss_vs_compute(report: Report, figure) -> None:
    runs, iso, law = report.table, report.isoflop, report.law.law
    axis = figure.subplots()
    points = axis.scatter(runs.flops, runs.loss, c=np.log10(runs.params), cmap="viridis", s=18)
    figure.colorbar(points, ax=axis, label="log10 N")
    budgets = _budgets(report)
    axis.plot(
        budgets,
        law.loss(*compute_optimal(law, budgets)),
        "k-",
        label="compute-optimal L(N_opt, D_opt)",
    )
    if iso.curves:
        axis.plot(
            [c.flops for c in iso.curves],
            [c.loss_opt for c in iso.curves],
            "r*",
            markersize=10,
            label="IsoFLOP minima",
        )
    axis.set(xscale="log", xlabel="compute C (FLOPs)", ylabel="loss", title="Loss vs compute")
    axis.legend()


def _plot_isoflop(report: Report, figure) -> None:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    curves = report.isoflop.curves
    axis = figure.subplots()
    axis.set(
        xscale="log", xlabel="parameters N", ylabel="loss", title="IsoFLOP curves (stars: minima)"
    )
    if not curves:
        axis.text(
            0.5, 0.5, "no budget with 3 or more model sizes", ha="center", transform=axis.transAxes
        )
        return
    shades = ScalarMappable(
        Normalize(np.log10(curves[0].flops), np.log10(curves[-1].flops)), colormaps["plasma"]
    )
    figure.colorbar(shades, ax=axis, label="log10 C")
    for curve in curves:
        color = shades.to_rgba(np.log10(curve.flops))
        grid = np.geomspace(curve.params.min(), curve.params.max(), 100)
        c0, c1, c2 = curve.coefficients
        axis.plot(curve.params, curve.loss, "o", color=color, markersize=4)
        axis.plot(grid, c0 + c1 * np.log(grid) + c2 * np.log(grid) ** 2, "-", color=color)
        axis.plot([curve.n_opt], [curve.loss_opt], "k*", markersize=8)


def _plot_optimal(report: Report, figure) -> None:
    iso, budgets = report.isoflop, _budgets(report)
    laws = compute_optimal(report.law.law, budgets)
    for axis, values, name, fitted in zip(
        figure.subplots(1, 2), laws, ("N_opt", "D_opt"), (iso.n_opt, iso.d_opt), strict=True
    ):
        axis.plot(budgets, values, "k-", label="Approach 3")
        if iso.curves:
            measured = [c.n_opt if name == "N_opt" else c.d_opt for c in iso.curves]
            axis.plot(
                [c.flops for c in iso.curves], measured, "r*", markersize=10, label="IsoFLOP minima"
            )
        if fitted is not None:
            axis.plot(budgets, fitted(budgets), "r--", label="IsoFLOP power law")
        axis.set(
            xscale="log",
            yscale="log",
            xlabel="compute C (FLOPs)",
            ylabel=name,
            title=f"{name} vs compute",
        )
        axis.legend()


def _plot_predicted(report: Report, figure) -> None:
    observed, predicted = report.table.loss, _predicted(report)
    axis = figure.subplots()
    axis.scatter(observed, predicted, s=14)
    span = [min(observed.min(), predicted.min()), max(observed.max(), predicted.max())]
    axis.plot(span, span, "k--", linewidth=1)
    axis.set(xlabel="observed loss", ylabel="predicted loss", title="Predicted vs observed")


def _plot_metrics(report: Report, figure) -> None:
    runs, budgets = report.table, _budgets(report)
    rows = figure.subplots(len(report.downstream), 2, squeeze=False)
    for (by_compute, by_loss), (name, down) in zip(rows, report.downstream.items(), strict=True):
        values = runs.metrics[name]
        by_compute.scatter(runs.flops, values, s=14)
        by_compute.set(xscale="log", xlabel="compute C (FLOPs)", ylabel=name)
        if down.gamma is not None:
            by_compute.plot(
                budgets, down.k * budgets**down.gamma, "r-", label=f"C^{down.gamma:.3f}"
            )
            by_compute.set(yscale="log")
            by_compute.legend()
        by_loss.scatter(runs.loss, values, s=14)
        grid = np.linspace(runs.loss.min(), runs.loss.max(), 2)
        by_loss.plot(
            grid, down.slope * grid + down.intercept, "r-", label=f"r = {down.correlation:.3f}"
        )
        by_loss.set(xlabel="loss", ylabel=name)
        by_loss.legend()


def _predicted(report: Report) -> np.ndarray:
    """The fitted law's loss for every run (effective data D' for repeated epochs)."""
    runs, fit = report.table, report.law
    tokens = runs.tokens
    if runs.unique_tokens is not None and fit.r_star is not None:
        tokens = effective_tokens(tokens, runs.unique_tokens, fit.r_star)
    return fit.law.loss(runs.params, tokens)
