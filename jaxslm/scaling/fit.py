"""Approach 3: L(N, D) = E + A / N^alpha + B / D^beta, fitted as docs/reference.md section 6 says.

The fit minimises, over theta = (a, b, e, alpha, beta) with A = exp a, B = exp b, E = exp e,

    sum_i w_i Huber_delta(LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i)

by L-BFGS from every point of a grid of starts and keeps the lowest objective. Weights w_i are
1, or a bootstrap resample's counts. All starts run at once in one jitted JAX loop:

- Each start is a "lane" of a vmapped state machine that makes exactly one objective-and-gradient
  evaluation per loop step, whether it is trying a step length or has just accepted one. The
  line search finds a weak-Wolfe step as Lewis & Overton do for nonsmooth objectives (double
  until a step overshoots, then bisect; too long a first step shrinks by quadratic
  interpolation), so every accepted pair (s, y) has s.y > 0 and the L-BFGS memory stays
  positive definite.
- A fixed number of lanes (`width`) works through a queue of starts: a lane that stops writes
  its result and takes the next start, so lanes never idle while starts remain, whatever the
  spread of iteration counts.
- Stopping rules are scipy's L-BFGS-B defaults, (f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol
  or max |gradient| <= gtol, applied to the objective divided by delta n (the mean Huber term in
  units of delta). On the raw objective, often far below 1, both rules would be absolute
  tolerances that stop early (docs/reference.md: averaging instead of summing stops L-BFGS early;
  for few runs, summing does too). The minimiser is the same, as is the objective reported.
- Precision: the grid pass runs in float32 (2-3x faster on CPU), where each start stops at
  float32's resolution of the objective; the 32 best endpoints then continue in float64 to the
  stopping rules above, and the best of those is the fit. Bootstrap refits run in float64.

Multi-epoch data (Muennighoff et al. 2023): with U unique tokens seen for R = D / U - 1 repeated
epochs, the effective data D' = U + U R* (1 - exp(-R / R*)) replaces D; R* is given or fitted as
a sixth parameter, log R*.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxslm.errors import JaxslmError

# Status of one start after the fit.
CONVERGED, STALLED, MAX_EVALS, NOT_FINITE = 1, 2, 3, 4
STATUS_NAMES = {
    CONVERGED: "converged",
    STALLED: "stalled",  # no step length lowered the objective: its float resolution, usually
    MAX_EVALS: "max_evals",
    NOT_FINITE: "not_finite",
}
# Starting values of log R* when it is fitted (Muennighoff et al. fitted R* = 15.4).
LOG_R_STAR_STARTS = (np.log(5.0), np.log(15.0), np.log(50.0))


@dataclass(frozen=True)
class Law:
    """L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params: Any, tokens: Any) -> np.ndarray:
        """Predicted loss of models with `params` parameters trained on `tokens` tokens."""
        params, tokens = np.asarray(params, float), np.asarray(tokens, float)
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    @classmethod
    def from_theta(cls, theta: Any) -> Law:
        """The law of log-space parameters (a, b, e, alpha, beta)."""
        a, b, e, alpha, beta = (float(v) for v in np.asarray(theta)[:5])
        return cls(
            E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta
        )

    def to_dict(self) -> dict[str, float]:
        """E, A, B, alpha, beta and their logs a, b, e."""
        return {
            **asdict(self),
            "a": float(np.log(self.A)),
            "b": float(np.log(self.B)),
            "e": float(np.log(self.E)),
        }


# docs/reference.md section 6. Cuervo & Marxer fitted with Huber delta 0.03.
PUBLISHED: dict[str, Law] = {
    "speech": Law(E=1.73, A=13.9, B=39.8, alpha=0.25, beta=0.24),
    "text": Law(E=1.87, A=521.0, B=1488.0, alpha=0.35, beta=0.35),
    "chinchilla": Law(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    "epoch": Law(E=1.8172, A=477.84, B=2143.86, alpha=0.3473, beta=0.3672),
}


@dataclass(frozen=True)
class LbfgsOptions:
    """The batched L-BFGS: memory, stopping rules (scipy L-BFGS-B's defaults), step lengths tried
    per line search before a start counts as stalled (in float64, and in fit_law's float32 grid
    pass, where failing line searches mostly mean the objective's resolution is reached), and the
    number of lanes (None: 128 on CPU, where narrow batches waste less while the last starts
    finish, and 4096 on accelerators, where each step costs about the same at any width)."""

    memory: int = 10
    ftol: float = 2.220446049250313e-09
    gtol: float = 1e-5
    max_evals: int = 3000
    max_linesearch: int = 20
    max_linesearch_float32: int = 5
    width: int | None = None


def epoch_grid() -> np.ndarray:
    """Epoch AI's 4,500 starts [S, 5] in (a, b, e, alpha, beta) order: alpha, beta in
    {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}."""
    half = np.arange(0.0, 2.5, 0.5)
    points = itertools.product(
        half, half, np.arange(-1.0, 1.5, 0.5), np.arange(0.0, 30.0, 5.0), np.arange(0.0, 30.0, 5.0)
    )
    return np.array([(a, b, e, alpha, beta) for alpha, beta, e, a, b in points])


def effective_tokens(tokens: Any, unique_tokens: Any, r_star: float) -> np.ndarray:
    """Muennighoff et al.'s D' = U + U R* (1 - exp(-R / R*)) with R = D / U - 1 repeats."""
    tokens, unique = np.asarray(tokens, float), np.asarray(unique_tokens, float)
    return unique * (1 + r_star * -np.expm1(-(tokens / unique - 1) / r_star))


def value_and_grad(
    theta: jax.Array, data: dict[str, jax.Array], weights: jax.Array, delta: float
) -> tuple[jax.Array, jax.Array]:
    """The objective, sum_i w_i Huber_delta(log pred_i - log L_i), and its gradient in theta.

    `data` holds log_n, log_loss and log_d, or log_u and repeats when theta[5] is log R*. The
    gradient is written out (one pass over the runs, a third faster than autodiff on CPU):
    with c = clip(r, -delta, delta), Huber(r) = c (r - c / 2) and Huber'(r) = c.
    """
    a, b, e, alpha, beta = (theta[i] for i in range(5))
    if "log_d" in data:
        log_d = data["log_d"]
    else:
        r_star = jnp.exp(theta[5])
        ratio = data["repeats"] / r_star
        decay = jnp.exp(-ratio)
        extra = r_star * -jnp.expm1(-ratio)
        log_d = data["log_u"] + jnp.log1p(extra)
        d_log_d = r_star * (-jnp.expm1(-ratio) - ratio * decay) / (1 + extra)  # d/d log R*
    # float64 holds exp of every term a start can reach; overflow gives inf, a rejected step.
    u = jnp.exp(a - alpha * data["log_n"])
    v = jnp.exp(b - beta * log_d)
    big_e = jnp.exp(e)
    pred = u + v + big_e
    residual = jnp.log(pred) - data["log_loss"]
    c = jnp.clip(residual, -delta, delta)
    q = weights * c / pred
    qu, qv = q * u, q * v
    terms = [weights * c * (residual - 0.5 * c), qu, qv, q, qu * data["log_n"], qv * log_d]
    if "log_d" not in data:
        terms.append(qv * d_log_d)
    sums = jax.lax.reduce(terms, [jnp.zeros((), pred.dtype)] * len(terms), _add, (0,))
    grad = [sums[1], sums[2], big_e * sums[3], -sums[4], -sums[5]]
    if "log_d" not in data:
        grad.append(-beta * sums[6])
    return sums[0], jnp.stack(grad)


def _add(left, right):
    return [x + y for x, y in zip(left, right, strict=True)]


def _lbfgs_direction(grad, s_mem, y_mem, rho, gamma, count, memory: int):
    """-H grad by the two-loop recursion; memory rows are oldest first, the last `count` valid."""
    rho = jnp.where(jnp.arange(memory) >= memory - count, rho, 0.0)  # unused rows do nothing

    def newest_first(q, row):
        s, y, r = row
        c = r * jnp.dot(s, q)
        return q - c * y, c

    q, coef = jax.lax.scan(newest_first, grad, (s_mem, y_mem, rho), reverse=True)

    def oldest_first(r, row):
        s, y, rh, c = row
        return r + s * (c - rh * jnp.dot(y, r)), None

    r = jax.lax.scan(oldest_first, gamma * q, (s_mem, y_mem, rho, coef))[0]
    return -r


def _lane_step(lane: dict, f_t, g_t, opts: LbfgsOptions) -> dict:
    """One lane after evaluating f_t, g_t at x + t p: accept the step, or shorten/lengthen t.

    A fresh lane (f = inf, p = 0) accepts its start unconditionally and turns downhill with a
    first step at most 1 long."""
    finite = jnp.isfinite(f_t) & jnp.all(jnp.isfinite(g_t))
    x_t = lane["x"] + lane["t"] * lane["p"]
    slope = jnp.dot(lane["g"], lane["p"])
    armijo = finite & (f_t <= lane["f"] + 1e-4 * lane["t"] * slope)
    curved = jnp.dot(g_t, lane["p"]) >= 0.9 * slope
    accept = armijo & curved
    hi = jnp.where(armijo, lane["hi"], lane["t"])
    lo = jnp.where(armijo & ~curved, lane["t"], lane["lo"])
    s, y = x_t - lane["x"], g_t - lane["g"]
    sy = jnp.dot(s, y)
    keep = accept & (sy > 0)  # Wolfe steps always qualify; a fresh lane's start does not
    s_mem = jnp.where(keep, jnp.concatenate([lane["s_mem"][1:], s[None]]), lane["s_mem"])
    y_mem = jnp.where(keep, jnp.concatenate([lane["y_mem"][1:], y[None]]), lane["y_mem"])
    rho = jnp.where(keep, jnp.append(lane["rho"][1:], 1.0 / jnp.where(keep, sy, 1.0)), lane["rho"])
    count = jnp.minimum(lane["count"] + keep, opts.memory)
    gamma = jnp.where(keep, sy / jnp.where(keep, jnp.dot(y, y), 1.0), lane["gamma"])
    direction = _lbfgs_direction(g_t, s_mem, y_mem, rho, gamma, count, opts.memory)
    first = jnp.minimum(1.0, 1.0 / jnp.linalg.norm(g_t))
    fresh = jnp.isinf(lane["f"])
    scale = jnp.maximum(jnp.maximum(jnp.abs(lane["f"]), jnp.abs(f_t)), 1.0)
    flat = ~fresh & (lane["f"] - f_t <= opts.ftol * scale)
    converged = accept & (flat | (jnp.max(jnp.abs(g_t)) <= opts.gtol))
    searches = jnp.where(accept, 0, lane["searches"] + 1)
    evals = lane["evals"] + 1
    status = jnp.select(
        [converged, fresh & ~finite, searches >= opts.max_linesearch, evals >= opts.max_evals],
        [CONVERGED, NOT_FINITE, STALLED, MAX_EVALS],
        0,
    ).astype(jnp.int32)
    return dict(
        x=jnp.where(accept, x_t, lane["x"]),
        f=jnp.where(accept, f_t, lane["f"]),
        g=jnp.where(accept, g_t, lane["g"]),
        p=jnp.where(accept, direction, lane["p"]),
        t=jnp.where(
            accept,
            jnp.where(count > 0, 1.0, first),
            _next_step(lane["t"], lo, hi, lane["f"], f_t, slope),
        ),
        lo=jnp.where(accept, 0.0, lo),
        hi=jnp.where(accept, jnp.inf, hi),
        s_mem=s_mem,
        y_mem=y_mem,
        rho=rho,
        gamma=gamma,
        count=count,
        searches=searches,
        evals=evals,
        status=status,
    )


def _next_step(t, lo, hi, f, f_t, slope):
    """The next step length of a line search: twice lo until a step overshoots, then within
    (lo, hi). While lo is 0 it is the minimum of the quadratic through f, the slope and f_t,
    kept within [t / 10, t / 2] (steps far too long shrink 10x per try); otherwise bisection."""
    curvature = f_t - f - slope * t
    quadratic = jnp.where(
        curvature > 0, -slope * t * t / (2 * jnp.where(curvature > 0, curvature, 1)), 0
    )
    shrink = jnp.clip(jnp.where(jnp.isfinite(f_t), quadratic, 0), 0.1 * t, 0.5 * t)
    inside = jnp.where(lo > 0, 0.5 * (lo + hi), shrink)
    return jnp.where(jnp.isfinite(hi), inside, 2.0 * lo)


def _fresh_lanes(x0: jax.Array, memory: int) -> dict:
    width, size = x0.shape
    zeros = jnp.zeros(width, x0.dtype)
    return dict(
        x=x0,
        f=jnp.full(width, jnp.inf, x0.dtype),
        g=jnp.zeros_like(x0),
        p=jnp.zeros_like(x0),
        t=zeros,
        lo=zeros,
        hi=jnp.full(width, jnp.inf, x0.dtype),
        s_mem=jnp.zeros((width, memory, size), x0.dtype),
        y_mem=jnp.zeros((width, memory, size), x0.dtype),
        rho=jnp.zeros((width, memory), x0.dtype),
        gamma=jnp.ones(width, x0.dtype),
        count=jnp.zeros(width, jnp.int32),
        searches=jnp.zeros(width, jnp.int32),
        evals=jnp.zeros(width, jnp.int32),
        status=jnp.zeros(width, jnp.int32),
    )


@functools.partial(jax.jit, static_argnames=("opts",))
def _minimise(starts, sample, weights, data, delta, opts: LbfgsOptions):
    """L-BFGS from every row of `starts` [S, P] on the objective weighted by
    `weights[sample[i]]`; returns final x [S, P], f [S], status [S], evaluations [S]."""
    total = starts.shape[0]
    width = min(opts.width, total)
    # Lanes see the objective in units of delta x (sum of weights = number of runs), the mean
    # Huber term per delta, so that scipy's stopping rules do not depend on delta or on n.
    unit = delta * weights.shape[1]
    shared = weights.shape[0] == 1  # one weight row: broadcast it rather than gather per lane
    objective = jax.vmap(value_and_grad, (0, None, None if shared else 0, None))
    step = jax.vmap(functools.partial(_lane_step, opts=opts))

    def body(carry):
        lanes, ids, next_id, out = carry
        lane_weights = weights[0] if shared else weights[sample[jnp.maximum(ids, 0)]]
        f_t, g_t = objective(
            lanes["x"] + lanes["t"][:, None] * lanes["p"], data, lane_weights, delta
        )
        lanes = step(lanes, f_t / unit, g_t / unit)
        # Lanes that stopped hand in their start's result and take the next start in the queue.
        free = (lanes["status"] != 0) | (ids < 0)
        slot = jnp.where(free & (ids >= 0), ids, total)
        out = {key: out[key].at[slot].set(lanes[key], mode="drop") for key in out}
        new_ids = next_id + jnp.cumsum(free, dtype=jnp.int32) - 1
        refill = free & (new_ids < total)
        ids = jnp.where(refill, new_ids, jnp.where(free, -1, ids))
        fresh = _fresh_lanes(starts[jnp.clip(new_ids, 0, total - 1)], opts.memory)
        lanes = jax.tree.map(lambda a, b: jnp.where(_expand(refill, a), a, b), fresh, lanes)
        return lanes, ids, next_id + jnp.sum(refill, dtype=jnp.int32), out

    out = dict(
        x=starts,
        f=jnp.full(total, jnp.inf, starts.dtype),
        status=jnp.zeros(total, jnp.int32),
        evals=jnp.zeros(total, jnp.int32),
    )
    ids = jnp.arange(width, dtype=jnp.int32)
    carry = (_fresh_lanes(starts[:width], opts.memory), ids, jnp.int32(width), out)
    out = jax.lax.while_loop(lambda c: jnp.any(c[1] >= 0), body, carry)[3]
    return out["x"], out["f"] * unit, out["status"], out["evals"]


def _expand(mask: jax.Array, like: jax.Array) -> jax.Array:
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


@dataclass(frozen=True)
class Starts:
    """The outcome of every start: final theta [S, P], objective [S], status [S], evals [S]."""

    theta: np.ndarray
    objective: np.ndarray
    status: np.ndarray
    evals: np.ndarray

    def rows(self, rows: Any) -> Starts:
        """The outcome of the starts `rows` (a slice or indices)."""
        return Starts(self.theta[rows], self.objective[rows], self.status[rows], self.evals[rows])

    def ranking(self) -> np.ndarray:
        """Start indices by final objective, lowest first (non-finite last)."""
        return np.argsort(np.where(np.isfinite(self.objective), self.objective, np.inf))

    def best(self) -> int:
        """Index of the lowest finite objective, however its start stopped."""
        if not np.isfinite(self.objective).any():
            raise JaxslmError("the fit diverged from every start: check the runs table")
        return int(self.ranking()[0])

    def counts(self) -> dict[str, int]:
        """How many starts ended in each way."""
        return {name: int(np.sum(self.status == code)) for code, name in STATUS_NAMES.items()}


def minimise_starts(
    data: dict[str, np.ndarray],
    starts: np.ndarray,
    *,
    delta: float = 1e-3,
    weights: np.ndarray | None = None,
    sample: np.ndarray | None = None,
    opts: LbfgsOptions = LbfgsOptions(),
    dtype: Any = jnp.float64,
) -> Starts:
    """Run batched L-BFGS in `dtype` from each start; `weights` [R, n] are per-run weights
    (default one row of ones) and `sample` [S] picks each start's row."""
    n = len(data["log_loss"])
    if opts.width is None:
        opts = replace(opts, width=128 if jax.default_backend() == "cpu" else 4096)
    weights = np.ones((1, n)) if weights is None else weights
    sample = np.zeros(len(starts), np.int32) if sample is None else sample
    with jax.enable_x64(True):
        result = _minimise(
            jnp.asarray(starts, dtype),
            jnp.asarray(sample, jnp.int32),
            jnp.asarray(weights, dtype),
            {key: jnp.asarray(value, dtype) for key, value in data.items()},
            jnp.asarray(delta, dtype),
            opts,
        )
        theta, objective, status, evals = (np.asarray(v) for v in result)
        return Starts(theta.astype(float), objective.astype(float), status, evals)


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
    opts: LbfgsOptions = LbfgsOptions(),
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
