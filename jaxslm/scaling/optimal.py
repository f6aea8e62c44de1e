"""Compute-optimal allocation under a fitted law (docs/reference.md section 6) and the `plan` for a
FLOP budget: N_opt, D_opt, the loss predicted, a model shape and a config snippet.

With C = 6 N D, minimising L(N, D) = E + A / N^alpha + B / D^beta gives
G = (alpha A / (beta B))^(1 / (alpha + beta)), N_opt = G (C / 6)^(beta / (alpha + beta)),
D_opt = G^-1 (C / 6)^(alpha / (alpha + beta)).

The shape is the sweep's family rule (`jaxslm.scaling.sweep.shape_for`): a Llama layer holds
about 12 d^2 weights, width d = aspect x depth, rounded to whole heads. The defaults here follow
Cuervo & Marxer's 20M-823M ladder: head_dim 64, one KV head per query head, and aspect 85, the
median width/depth of the ladder, which gives its 20M (6 layers, d 512) and 155M (12 layers,
d 1024) shapes exactly. N_opt is taken as non-embedding parameters,
the convention of the runs.csv that sweeps write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from jaxslm.errors import JaxslmError
from jaxslm.scaling.flops import peak_flops_per_device
from jaxslm.scaling.law import Law

GPUS = ("h100", "a100", "h200")


def exponents(law: Law) -> tuple[float, float]:
    """(a, b) with N_opt ~ C^a and D_opt ~ C^b."""
    total = law.alpha + law.beta
    return law.beta / total, law.alpha / total


def allocation_coefficient(law: Law) -> float:
    """G = (alpha A / (beta B))^(1 / (alpha + beta))."""
    return (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))


def compute_optimal(
    law: Law, flops: Any, flops_per_nd: float = 6.0
) -> tuple[np.ndarray, np.ndarray]:
    """N_opt(C) and D_opt(C) for budgets `flops`, C = `flops_per_nd` N D (6 N D when D counts
    tokens; 6 r N D for D in seconds of audio at r tokens a second)."""
    a, b = exponents(law)
    g = allocation_coefficient(law)
    scaled = np.asarray(flops, float) / flops_per_nd
    return g * scaled**a, scaled**b / g


def budget_flops(gpu: str, count: int, hours: float, mfu: float = 0.4) -> float:
    """Training FLOPs of `count` GPUs for `hours` at `mfu` of their dense bf16 peak."""
    if gpu.lower() not in GPUS:
        raise JaxslmError(f"--gpu {gpu!r}: choose one of {', '.join(GPUS)}")
    if count <= 0 or hours <= 0 or not 0 < mfu <= 1:
        raise JaxslmError("--count and --hours must be positive and --mfu in (0, 1]")
    return peak_flops_per_device(gpu, "bfloat16") * mfu * count * hours * 3600


@dataclass(frozen=True)
class Plan:
    """The compute-optimal run for a budget and a model shape near N_opt."""

    flops: float
    n_opt: float
    d_opt: float  # in the law's data units (tokens, or seconds of audio)
    loss: float
    shape: dict[str, int]
    shape_params: int
    tokens: float  # the training tokens of d_opt

    def config_yaml(self) -> str:
        """Model and budget keys for a training config (as configs/tiny.yaml)."""
        snippet = {"model": self.shape, "budget": {"train_max_tokens": round(self.tokens)}}
        return yaml.safe_dump(snippet, sort_keys=False)


def plan(
    law: Law,
    flops: float,
    aspect: float = 85,
    head_dim: int = 64,
    kv_ratio: int = 1,
    flops_per_nd: float = 6.0,
) -> Plan:
    """N_opt, D_opt and the loss predicted for `flops` (C = `flops_per_nd` N D), with the
    family shape nearest N_opt."""
    from jaxslm.scaling.sweep import shape_for, shape_params

    if not flops > 0:
        raise JaxslmError(f"--flops must be positive, got {flops}")
    n_opt, d_opt = (float(v) for v in compute_optimal(law, flops, flops_per_nd))
    shape = shape_for(n_opt, aspect, head_dim, kv_ratio)
    return Plan(
        flops=flops,
        n_opt=n_opt,
        d_opt=d_opt,
        loss=float(law.loss(n_opt, d_opt)),
        shape=shape,
        shape_params=shape_params(shape),
        tokens=d_opt * flops_per_nd / 6,
    )
