"""Approach 3: L(N, D) = E + A / N^alpha + B / D^beta, fitted as docs/reference.md section 6 says.

The fit minimises the summed Huber objective of `jaxslm.scaling.law` by L-BFGS
(`jaxslm.scaling.lbfgs`) from every point of a grid of starts and keeps the lowest objective.

- Precision: the grid pass runs in float32 (2-3x faster on CPU), where each start stops at
  float32's resolution of the objective; the 32 best endpoints then continue in float64 to the
  stopping rules, and the best of those is the fit. Bootstrap refits run in float64.
- Multi-epoch data: with unique tokens, the effective data D' replaces D, with R* given or
  fitted as a sixth parameter from three starting values of log R* per grid point.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.scaling.law import Law, effective_tokens, epoch_grid
from jaxslm.scaling.lbfgs import DEFAULT_OPTIONS, LbfgsOptions, minimise_starts

# Starting values of log R* when it is fitted (Muennighoff et al. fitted R* = 15.4).
LOG_R_STAR_STARTS = (np.log(5.0), np.log(15.0), np.log(50.0))


@dataclass(frozen=True)
class LawFit:
    """A fitted law with its objective, the fit's settings and bootstrap intervals."""

    law: Law
    theta: np.ndarray
    start: np.ndarray
    objective: float
    n_runs: int
    delta: float
    n_starts: int
    grid_pass: dict[str, int]
    r_star: float | None = None
    ci: float = 0.95
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    samples: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the law, a b e, objective, settings and intervals."""
        out: dict[str, Any] = {
            **self.law.to_dict(),
            "objective": self.objective,
            "n_runs": self.n_runs,
            "delta": self.delta,
            "n_starts": self.n_starts,
            "best_start": self.start.tolist(),
            "grid_pass": self.grid_pass,
        }
        if self.r_star is not None:
            out["r_star"] = self.r_star
        if self.intervals:
            out["ci"] = self.ci
            out["n_bootstrap"] = len(self.samples)
            out["intervals"] = {k: list(v) for k, v in self.intervals.items()}
        return out


def fit_law(
    params: Any,
    tokens: Any,
    loss: Any,
    *,
    delta: float = 1e-3,
    grid: np.ndarray | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    ci: float = 0.95,
    polish: int = 32,
    bootstrap_starts: int = 8,
    unique_tokens: Any = None,
    r_star: float | None = None,
    opts: LbfgsOptions = DEFAULT_OPTIONS,
) -> LawFit:
    """Fit L(N, D) to runs (N params, D tokens, loss) from every start of `grid` (default
    `epoch_grid()`): a float32 pass from every start, then float64 from the `polish` best
    endpoints, keeping the lowest objective. With `bootstrap` > 0, refit that many resamples of
    the runs (each from the optimum and the starts of the `bootstrap_starts` best grid runs, in
    float64) for percentile intervals.

    With `unique_tokens`, D counts repeated epochs: D' replaces D with R* = `r_star`, or R*
    fitted when `r_star` is None.
    """
    params, tokens, loss = (np.asarray(v, float) for v in (params, tokens, loss))
    for name, values in (("params", params), ("tokens", tokens), ("loss", loss)):
        if not np.all(np.isfinite(values) & (values > 0)):
            raise JaxslmError(f"{name}: every value must be a positive finite number")
    if not 0 < ci < 1:
        raise JaxslmError(f"ci={ci}: the interval's coverage must lie in (0, 1)")
    data = {"log_n": np.log(params), "log_loss": np.log(loss)}
    grid = epoch_grid() if grid is None else np.asarray(grid, float)
    fit_r_star = unique_tokens is not None and r_star is None
    if unique_tokens is None:
        data["log_d"] = np.log(tokens)
    elif fit_r_star:
        unique = np.asarray(unique_tokens, float)
        data.update(log_u=np.log(unique), repeats=tokens / unique - 1)
        grid = np.array([[*row, r] for row in grid for r in LOG_R_STAR_STARTS])
    else:
        data["log_d"] = np.log(effective_tokens(tokens, unique_tokens, r_star))
    n_theta = grid.shape[1]
    if len(loss) < max(5, n_theta):
        raise JaxslmError(f"the fit needs at least {max(5, n_theta)} runs, got {len(loss)}")

    screen = replace(opts, max_linesearch=opts.max_linesearch_float32)
    grid_pass = minimise_starts(data, grid, delta=delta, opts=screen, dtype=jnp.float32)
    order = grid_pass.ranking()
    seeds = grid_pass.theta[order[:polish]]
    # One float64 call polishes the seeds (weights row 0: every run once) and, when asked, fits
    # each bootstrap resample (rows 1..R) from the best seed and the best grid runs' starts.
    per_resample = np.concatenate([seeds[:1], grid[order[:bootstrap_starts]]])
    resamples = _resample_weights(len(loss), bootstrap, seed)
    final = minimise_starts(
        data,
        np.concatenate([seeds, np.tile(per_resample, (bootstrap, 1))]),
        delta=delta,
        weights=np.concatenate([np.ones((1, len(loss))), resamples]),
        sample=np.repeat(np.arange(bootstrap + 1), [len(seeds)] + [len(per_resample)] * bootstrap),
        opts=opts,
    )
    polished = final.rows(slice(0, len(seeds)))
    best = polished.best()
    theta = polished.theta[best]
    fitted = LawFit(
        law=Law.from_theta(theta),
        theta=theta,
        start=grid[order[best]],
        objective=float(polished.objective[best]),
        n_runs=len(loss),
        delta=delta,
        n_starts=len(grid),
        grid_pass=grid_pass.counts(),
        r_star=float(np.exp(theta[5])) if fit_r_star else r_star,
        ci=ci,
    )
    if bootstrap <= 0:
        return fitted
    samples = []
    for r in range(bootstrap):
        first = len(seeds) + r * len(per_resample)
        part = final.rows(slice(first, first + len(per_resample)))
        samples.append(part.theta[part.best()])
    samples = np.array(samples)
    lo, hi = 50 * (1 - ci), 50 * (1 + ci)
    intervals = {}
    for name, values in _derived(samples).items():
        intervals[name] = (float(np.percentile(values, lo)), float(np.percentile(values, hi)))
    return LawFit(**{**fitted.__dict__, "intervals": intervals, "samples": samples})


def _resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """[R, n] counts of each run in `resamples` draws of n runs with replacement."""
    rng = np.random.default_rng(seed)
    draws = [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)]
    return np.array(draws, float).reshape(resamples, n)


def _derived(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample law parameters and compute-optimal exponents from thetas [R, P]."""
    a, b, e, alpha, beta = samples[:, :5].T
    with np.errstate(over="ignore"):  # a resample far from the data may reach e^b = inf
        big_e, big_a, big_b = np.exp(e), np.exp(a), np.exp(b)
    out = {
        "E": big_e,
        "A": big_a,
        "B": big_b,
        "alpha": alpha,
        "beta": beta,
        "a": a,
        "b": b,
        "e": e,
        "n_opt_exponent": beta / (alpha + beta),
        "d_opt_exponent": alpha / (alpha + beta),
    }
    if samples.shape[1] > 5:
        out["r_star"] = np.exp(samples[:, 5])
    return out
