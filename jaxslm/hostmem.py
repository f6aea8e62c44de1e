"""Host arrays that jax can adopt without a copy, and fast host-side layout changes.

jax's CPU client wraps a numpy buffer without copying when it is 64-byte aligned; numpy's
allocator only guarantees 16. Large models converted through these helpers therefore need one
host copy of their parameters, not two.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import numpy as np

ALIGNMENT = 64


def aligned_empty(shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(tuple(shape))


def cpu_device() -> jax.Device:
    """The host CPU device (also present on GPU and TPU machines)."""
    return jax.devices("cpu")[0]


def to_cpu_array(value: np.ndarray) -> jax.Array:
    """A jax array on the host CPU; no copy when `value` is 64-byte aligned and contiguous."""
    return jax.device_put(value, cpu_device())


@functools.lru_cache(maxsize=64)
def _compiled(transform: Callable, dtype: np.dtype) -> Callable:
    return jax.jit(lambda x: transform(x).astype(dtype))


def transform_on_cpu(transform: Callable, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`transform(value).astype(dtype)` compiled by XLA on the CPU (transposes there are
    several times faster than numpy's), returned as a host numpy array."""
    return np.asarray(_compiled(transform, np.dtype(dtype))(to_cpu_array(value)))
