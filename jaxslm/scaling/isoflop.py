"""Approach 2 (IsoFLOP): per compute budget, a parabola of loss against log N; its minima give
N_opt(C) ~ C^a and D_opt(C) = C / (6 N_opt) ~ C^b.

Runs belong to one budget when their FLOPs lie within a relative tolerance of the budget's
smallest run (sorted, so budgets never overlap); the budget is the geometric mean of its runs.
A budget needs at least 3 distinct model sizes and an upward-opening parabola whose minimum lies
within its sampled sizes (an extrapolated minimum says where the budget was not sampled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_SIZES = 3


@dataclass(frozen=True)
class PowerLaw:
    """y = k x^exponent, fitted by least squares on log y against log x."""

    k: float
    exponent: float

    def __call__(self, x: Any) -> np.ndarray:
        return self.k * np.asarray(x, float) ** self.exponent


def power_law(x: Any, y: Any) -> PowerLaw:
    """Least-squares line through (log x, log y); x and y positive, at least 2 distinct x."""
    exponent, log_k = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)
    return PowerLaw(k=float(np.exp(log_k)), exponent=float(exponent))


def group_budgets(flops: Any, rtol: float = 0.05) -> np.ndarray:
    """Budget label per run: runs sorted by FLOPs start a new budget whenever they exceed the
    current budget's smallest run by more than `rtol` (relative)."""
    flops = np.asarray(flops, float)
    labels = np.empty(len(flops), int)
    label, first = -1, -np.inf
    for i in np.argsort(flops, kind="stable"):
        if flops[i] > first * (1 + rtol):
            label, first = label + 1, flops[i]
        labels[i] = label
    return labels


@dataclass(frozen=True)
class IsoFlopCurve:
    """One budget: loss = c0 + c1 x + c2 x^2 with x = ln N, and its minimum."""

    flops: float
    params: np.ndarray
    loss: np.ndarray
    coefficients: tuple[float, float, float]
    n_opt: float
    loss_opt: float
    flops_per_nd: float = 6.0  # C = flops_per_nd N D, D in the law's units

    @property
    def d_opt(self) -> float:
        return self.flops / (self.flops_per_nd * self.n_opt)

    def to_dict(self) -> dict[str, Any]:
        return {
            "flops": self.flops,
            "n_runs": len(self.params),
            "n_opt": self.n_opt,
            "d_opt": self.d_opt,
            "loss_opt": self.loss_opt,
            "parabola_ln_n": list(self.coefficients),
        }


def parabola_minimum(params: Any, loss: Any) -> tuple[tuple[float, float, float], float, float]:
    """(c0, c1, c2), N_opt, loss at N_opt of the least-squares parabola of loss against ln N;
    N_opt is NaN when the parabola opens downwards."""
    c2, c1, c0 = np.polyfit(np.log(np.asarray(params, float)), np.asarray(loss, float), 2)
    if c2 <= 0:
        return (c0, c1, c2), float("nan"), float("nan")
    x = -c1 / (2 * c2)
    return (float(c0), float(c1), float(c2)), float(np.exp(x)), float(c0 + c1 * x + c2 * x * x)


@dataclass(frozen=True)
class IsoFlopFit:
    """Every usable budget's curve and the power laws of their minima (None below 2 budgets)."""

    curves: list[IsoFlopCurve]
    n_opt: PowerLaw | None
    d_opt: PowerLaw | None
    skipped: list[str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "budgets": [c.to_dict() for c in self.curves],
            "skipped": self.skipped,
        }
        if self.n_opt is not None and self.d_opt is not None:
            out.update(
                n_opt_exponent=self.n_opt.exponent,
                n_opt_coefficient=self.n_opt.k,
                d_opt_exponent=self.d_opt.exponent,
                d_opt_coefficient=self.d_opt.k,
            )
        return out


def isoflop_fit(
    params: Any, loss: Any, flops: Any, rtol: float = 0.05, flops_per_nd: float = 6.0
) -> IsoFlopFit:
    """Approach 2 over the runs' budgets (see the module docstring); D_opt = C / (N_opt
    `flops_per_nd`)."""
    params, loss, flops = (np.asarray(v, float) for v in (params, loss, flops))
    labels = group_budgets(flops, rtol)
    curves, skipped = [], []
    for label in range(labels.max() + 1 if len(labels) else 0):
        members = labels == label
        budget = float(np.exp(np.mean(np.log(flops[members]))))
        sizes = len(np.unique(params[members]))
        if sizes < MIN_SIZES:
            if members.sum() >= MIN_SIZES:
                skipped.append(f"C={budget:.3g}: {sizes} distinct model sizes")
            continue
        coefficients, n_opt, loss_opt = parabola_minimum(params[members], loss[members])
        if not np.isfinite(n_opt):
            skipped.append(f"C={budget:.3g}: the parabola has no minimum")
            continue
        if not params[members].min() <= n_opt <= params[members].max():
            skipped.append(f"C={budget:.3g}: the minimum N={n_opt:.3g} lies outside the sizes run")
            continue
        curves.append(
            IsoFlopCurve(
                budget, params[members], loss[members], coefficients, n_opt, loss_opt, flops_per_nd
            )
        )
    n_law = d_law = None
    if len(curves) >= 2:
        budgets = [c.flops for c in curves]
        n_law = power_law(budgets, [c.n_opt for c in curves])
        d_law = power_law(budgets, [c.d_opt for c in curves])
    return IsoFlopFit(curves, n_law, d_law, skipped)
