"""Batched L-BFGS: every start of a grid minimised at once in one jitted JAX loop.

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
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.scaling.law import value_and_grad

# Status of one start after the fit.
CONVERGED, STALLED, MAX_EVALS, NOT_FINITE = 1, 2, 3, 4
STATUS_NAMES = {
    CONVERGED: "converged",
    STALLED: "stalled",  # no step length lowered the objective: its float resolution, usually
    MAX_EVALS: "max_evals",
    NOT_FINITE: "not_finite",
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


DEFAULT_OPTIONS = LbfgsOptions()


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
    opts: LbfgsOptions = DEFAULT_OPTIONS,
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
