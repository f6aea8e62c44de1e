"""The law L(N, D) = E + A / N^alpha + B / D^beta (docs/reference.md section 6) and what its fit
minimises.

Over theta = (a, b, e, alpha, beta) with A = exp a, B = exp b, E = exp e, the objective is

    sum_i w_i Huber_delta(LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i)

with weights w_i of 1, or a bootstrap resample's counts. Multi-epoch data (Muennighoff et al.
2023): with U unique tokens seen for R = D / U - 1 repeated epochs, the effective data
D' = U + U R* (1 - exp(-R / R*)) replaces D; R* is given or fitted as a sixth parameter, log R*.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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
