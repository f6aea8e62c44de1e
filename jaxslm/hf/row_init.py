"""How new embedding (and untied LM-head) rows start when a vocabulary grows: as transformers'
`resize_token_embeddings` draws them (docs/reference.md section 2)."""

from __future__ import annotations

import numpy as np

from jaxslm.errors import JaxslmError

ROW_INIT_METHODS = ("mean_cov", "mean", "normal")


def resize_rows(
    matrix: np.ndarray,
    new_rows: int,
    method: str = "mean_cov",
    seed: int = 0,
    std: float = 0.02,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """`matrix` [rows, width] resized to `new_rows`, like transformers' resize_token_embeddings.

    The first min(rows, new_rows) rows are kept. Added rows are drawn from N(mean, 1e-9 x cov)
    of the old rows (`mean_cov`; the mean itself when rows <= width, where that covariance is
    singular and transformers falls back to the mean), set to the mean (`mean`), or drawn from
    N(0, std) (`normal`). Deterministic given `seed`. The result is written into `out`
    [new_rows, width] when given (any float dtype), else into a new array of `matrix.dtype`.
    """
    if method not in ROW_INIT_METHODS:
        raise JaxslmError(f"row init method {method!r} is not one of {ROW_INIT_METHODS}")
    rows, width = matrix.shape
    if out is None:
        out = np.empty((new_rows, width), dtype=matrix.dtype)
    kept = min(rows, new_rows)
    out[:kept] = matrix[:kept]
    added = new_rows - kept
    if added:
        out[kept:] = _new_rows(matrix, added, method, np.random.default_rng(seed), std)
    return out


def _new_rows(matrix, count, method, rng, std) -> np.ndarray:
    rows, width = matrix.shape
    if method == "normal":
        return rng.normal(0.0, std, size=(count, width))
    mean = _row_mean(matrix)
    if method == "mean" or rows <= width:
        return np.broadcast_to(mean, (count, width))
    return mean + np.sqrt(1e-9 / rows) * _centred_projection(matrix, mean, count, rng)


def _row_mean(matrix: np.ndarray, chunk: int = 8192) -> np.ndarray:
    total = np.zeros(matrix.shape[1])
    for start in range(0, matrix.shape[0], chunk):
        total += matrix[start : start + chunk].astype(np.float64).sum(axis=0)
    return total / matrix.shape[0]


def _centred_projection(matrix, mean, count, rng, chunk: int = 8192) -> np.ndarray:
    """(X - mean)^T G with G ~ N(0, 1) [rows, count], as [count, width].

    Its rows have covariance rows x cov(X), so scaling by 1/sqrt(rows) samples N(0, cov(X))
    without forming the width x width covariance (count/width times fewer flops).
    """
    total = np.zeros((matrix.shape[1], count))
    mean32 = mean.astype(np.float32)
    for start in range(0, matrix.shape[0], chunk):
        block = matrix[start : start + chunk].astype(np.float32) - mean32
        total += block.T @ rng.standard_normal((block.shape[0], count), dtype=np.float32)
    return total.T
