"""Benchmark: the full-grid Approach 3 fit in JAX against scipy's L-BFGS-B looping over starts.

Both sides minimise the same objective on the same data: Epoch AI's preparation of Chinchilla's
runs (`data/svg_extracted_data.csv` of github.com/epoch-research/analyzing-chinchilla, given
with --data or JAXSLM_CHINCHILLA_CSV; the 5 highest losses dropped, D = C / (6 N)), the summed Huber
loss (delta 1e-3) of log-loss residuals of the LSE form, from Epoch's 4,500-start grid.

- jaxslm: `fit_law`, batched L-BFGS from all 4,500 starts at once in float32, then the best 32
  endpoints continued in float64 (the fit as the report runs it, without bootstrap). The first
  call includes compilation ("cold"); the others are timed warm.
- scipy: `scipy.optimize.minimize(method="L-BFGS-B", jac=True)` with default tolerances and an
  analytic numpy gradient, one start after another, on a random subset of the starts; the time
  per start is scaled to 4,500. Two settings: "Epoch" minimises the raw sum, as Epoch AI's
  notebook does (with finite-difference gradients there, about 4x slower still); "same rules"
  minimises the sum divided by delta n, where jaxslm applies the same default tolerances, so
  both sides stop by the same rules (scipy then runs longer per start).

Runs alternate between the two sides and each figure is the median over the repeats, in wall
time and in CPU time of the process (all threads: JAX's two threads count twice, the other jobs
of a shared VM do not). The script checks that both reach the same optimum: scipy started from
the grid point whose JAX run ended best, and the best over scipy's subset, against the JAX
optimum (objective and parameters).

scipy runs with single-threaded OpenBLAS (set here before numpy loads): its BLAS calls work on
5-long vectors, and with the default thread pool they only spin, which made scipy 10-50x slower
whenever other jobs shared the VM.

    python benchmarks/scaling_fit.py [--subset 150] [--repeat 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

from jaxslm.scaling.fit import fit_law  # noqa: E402
from jaxslm.scaling.law import Law, epoch_grid  # noqa: E402
from jaxslm.scaling.lbfgs import LbfgsOptions  # noqa: E402

DATA = os.environ.get("JAXSLM_CHINCHILLA_CSV")
DELTA = 1e-3
PUBLISHED = Law(E=1.8172, A=477.84, B=2143.86, alpha=0.3473, beta=0.3672)


def chinchilla(path: Path) -> dict[str, np.ndarray]:
    """Log N, log D, log loss of Epoch's preparation: drop the 5 highest losses, D = C / (6N)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    n = np.array([float(r["Model Size"]) for r in rows])
    c = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = loss < np.sort(loss)[-5]
    return {
        "log_n": np.log(n[keep]),
        "log_d": np.log(c[keep] / (6 * n[keep])),
        "log_loss": np.log(loss[keep]),
    }


def numpy_objective(theta: np.ndarray, data: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
    """The summed Huber objective and its gradient, in numpy, for scipy."""
    a, b, e, alpha, beta = theta
    with np.errstate(over="ignore", invalid="ignore"):  # overflow: inf, a step scipy rejects
        u = np.exp(a - alpha * data["log_n"])
        v = np.exp(b - beta * data["log_d"])
        total = u + v + np.exp(e)
        residual = np.log(total) - data["log_loss"]
        size = np.abs(residual)
        value = np.where(size <= DELTA, 0.5 * residual**2, DELTA * (size - 0.5 * DELTA)).sum()
        q = np.clip(residual, -DELTA, DELTA) / total
        qu, qv = q * u, q * v
    grad = np.array(
        [
            qu.sum(),
            qv.sum(),
            np.exp(e) * q.sum(),
            -(qu * data["log_n"]).sum(),
            -(qv * data["log_d"]).sum(),
        ]
    )
    return float(value), grad


def scipy_fit(start: np.ndarray, data: dict[str, np.ndarray], unit: float = 1.0):
    """One L-BFGS-B run with scipy's default tolerances on the objective divided by `unit`."""

    def scaled(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = numpy_objective(theta, data)
        return value / unit, grad / unit

    result = minimize(scaled, start, jac=True, method="L-BFGS-B")
    result.fun *= unit
    return result


def timed(fn, *args):
    """fn(*args), its wall-clock seconds and the process's CPU seconds (all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DATA,
        required=DATA is None,
        help="Epoch AI's svg_extracted_data.csv (default: $JAXSLM_CHINCHILLA_CSV)",
    )
    parser.add_argument("--subset", type=int, default=150, help="starts scipy runs per repeat")
    parser.add_argument("--repeat", type=int, default=3, help="alternating repeats (medians)")
    parser.add_argument("--width", type=int, default=LbfgsOptions().width, help="JAX lanes")
    args = parser.parse_args()

    data = chinchilla(args.data)
    grid = epoch_grid()
    opts = LbfgsOptions(width=args.width)
    unit = DELTA * len(data["log_loss"])
    print(
        f"{len(data['log_loss'])} runs, {len(grid)} starts; jax {jax.__version__} on "
        f"{jax.devices()[0].platform}, scipy {scipy.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}"
    )

    runs = [np.exp(data[key]) for key in ("log_n", "log_d", "log_loss")]

    def jax_fit():
        return fit_law(*runs, delta=DELTA, opts=opts)

    def scipy_subset(picks, scale):
        return [scipy_fit(grid[i], data, scale) for i in picks]

    result, *cold = timed(jax_fit)
    rng = np.random.default_rng(0)
    times = {"jax": [], "Epoch": [], "same rules": []}  # (wall, CPU) seconds for the full grid
    subset_results = []
    for _ in range(args.repeat):
        picks = rng.choice(len(grid), args.subset, replace=False)
        for name, scale in (("Epoch", 1.0), ("same rules", unit)):
            fits, wall, cpu = timed(scipy_subset, picks, scale)
            times[name].append((wall * len(grid) / args.subset, cpu * len(grid) / args.subset))
            subset_results += fits
        result, *clock = timed(jax_fit)
        times["jax"].append(tuple(clock))

    medians = {k: [statistics.median(t[i] for t in v) for i in (0, 1)] for k, v in times.items()}
    jax_wall, jax_cpu = medians["jax"]
    print(
        f"\njax full grid: {jax_wall:.2f} s wall, {jax_cpu:.2f} s CPU (warm, median of "
        f"{args.repeat}); cold (compilation included) {cold[0]:.2f} s wall, {cold[1]:.2f} s CPU;"
        f" float32 pass: {result.grid_pass}"
    )
    for name in ("Epoch", "same rules"):
        wall, cpu = medians[name]
        print(
            f"scipy full grid ({name}): {wall:.1f} s wall, {cpu:.1f} s CPU ({args.repeat} x "
            f"{args.subset} random starts scaled to {len(grid)}, medians); speed-up "
            f"{wall / jax_wall:.1f}x wall / {cpu / jax_cpu:.1f}x CPU warm, "
            f"{wall / cold[0]:.1f}x / {cpu / cold[1]:.1f}x cold"
        )
    jax_theta, jax_value = result.theta, result.objective
    same_start = scipy_fit(result.start, data, unit)
    subset_best = min((r for r in subset_results if r.success), key=lambda r: r.fun)
    print(
        f"\n{'':30s}{'objective':>16s}"
        + "".join(f"{k:>10s}" for k in ("E", "A", "B", "alpha", "beta"))
    )
    rows = [
        ("jaxslm fit_law", jax_value, jax_theta),
        ("scipy (from jax's best start)", same_start.fun, same_start.x),
        ("scipy (best of its subset)", subset_best.fun, subset_best.x),
    ]
    for name, value, theta in rows:
        law = Law.from_theta(theta)
        print(
            f"{name:30s}{value:16.12f}{law.E:10.4f}{law.A:10.2f}{law.B:10.2f}"
            f"{law.alpha:10.4f}{law.beta:10.4f}"
        )
    p = PUBLISHED
    print(
        f"{'published (Epoch AI)':30s}{'':16s}{p.E:10.4f}{p.A:10.2f}{p.B:10.2f}"
        f"{p.alpha:10.4f}{p.beta:10.4f}"
    )
    n, d = np.exp(data["log_n"]), np.exp(data["log_d"])
    reference = Law.from_theta(jax_theta).loss(n, d)
    for name, value, theta in rows[1:]:
        worst = np.max(np.abs(Law.from_theta(theta).loss(n, d) / reference - 1))
        print(
            f"{name}: objective {(value - jax_value) / jax_value:+.2e} relative to jax; "
            f"predicted losses differ by at most {worst:.1e} relative"
        )


if __name__ == "__main__":
    main()
