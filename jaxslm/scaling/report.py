"""The scaling report of a runs table: Approach 3 with bootstrap intervals, Approach 2
(IsoFLOP), downstream metric fits, and what the runs leave undetermined."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.scaling.fit import LawFit, fit_law
from jaxslm.scaling.isoflop import IsoFlopFit, isoflop_fit, power_law
from jaxslm.scaling.optimal import allocation_coefficient, exponents
from jaxslm.scaling.runs_table import RunTable


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
        per_nd = self.table.flops_per_nd
        return {
            **self.law.to_dict(),
            "runs_file": self.table.path,
            "runs_flops": [float(self.table.flops.min()), float(self.table.flops.max())],
            "n_dropped": self.dropped,
            "compute_optimal": {
                "n_opt_exponent": a,
                "d_opt_exponent": b,
                "G": allocation_coefficient(self.law.law),
                "flops_per_nd": per_nd,
                "formula": f"N_opt = G (C/{per_nd:.6g})^a, D_opt = (C/{per_nd:.6g})^b / G",
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
    iso = isoflop_fit(runs.params, runs.loss, runs.flops, isoflop_rtol, runs.flops_per_nd)
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
