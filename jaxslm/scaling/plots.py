"""The PNG plots of a scaling report, drawn with matplotlib figures (no pyplot: no global
backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxslm.scaling.law import effective_tokens
from jaxslm.scaling.optimal import compute_optimal
from jaxslm.scaling.report import Report

PLOTS = (
    "loss_vs_compute.png",
    "isoflop.png",
    "optimal_allocation.png",
    "predicted_vs_observed.png",
)
METRICS_PLOT = "metrics.png"


def write_plots(report: Report, out: Path) -> list[str]:
    """Write every plot of `report` into `out`; returns the file names."""
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
        law.loss(*compute_optimal(law, budgets, runs.flops_per_nd)),
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
    laws = compute_optimal(report.law.law, budgets, report.table.flops_per_nd)
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
