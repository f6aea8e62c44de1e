"""The report folder: DIR/fit.json, DIR/summary.md and the plots, written at once; and the law
of a fit.json read back."""

from __future__ import annotations

import json
from pathlib import Path

from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_directory
from jaxslm.scaling.law import Law
from jaxslm.scaling.optimal import compute_optimal, exponents
from jaxslm.scaling.plots import write_plots
from jaxslm.scaling.report import Report
from jaxslm.textfiles import read_utf8


def write_report(report: Report, out_dir: str | Path, overwrite: bool = False) -> Path:
    """DIR/fit.json, DIR/summary.md and the plots, all appearing at once (or not at all)."""
    with atomic_directory(out_dir, overwrite) as staging:
        (staging / "fit.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        plots = write_plots(report, staging)
        (staging / "summary.md").write_text(summary(report, plots))
    return Path(out_dir)


def read_fit(path: str | Path) -> tuple[Law, tuple[float, float] | None, float]:
    """The law E, A, B, alpha, beta of a report's fit.json (or of the folder holding it), the
    smallest and largest compute of the runs it was fitted on (None if not recorded), and its
    C / (N D) (6 when D counts tokens)."""
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
    optimal = values.get("compute_optimal")
    per_nd = optimal.get("flops_per_nd", 6.0) if isinstance(optimal, dict) else 6.0
    law = Law(**{k: float(values[k]) for k in names})
    return law, None if flops is None else tuple(flops), float(per_nd)


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
            law_n = float(compute_optimal(law, curve.flops, report.table.flops_per_nd)[0])
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
