"""K-means codebooks: load (npy, safetensors, trusted pickles), assign units in JAX, fit new ones.

Unit id i is row i of the centroid matrix [K, D]. The textless/slamkit codebooks are
joblib-pickled sklearn MiniBatchKMeans models; unpickling runs arbitrary code, so they are read
only when trusted, once, and converted to a `.npy` beside them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_file, atomic_write_text

log = logging.getLogger(__name__)

SAFETENSORS_KEY = "centroids"  # used when a safetensors codebook holds more than one tensor
DEFAULT_CHUNK = 8192  # rows per assignment call: bounds the [chunk, K] distance matrix
MIN_CHUNK = 256
REASSIGN_EVERY = 10  # steps between reassignments of starved centroids in fit_kmeans
HIGHEST = jax.lax.Precision.HIGHEST  # full float32 matmuls on GPU/TPU too (no TF32/bf16 passes)

_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_PROTOCOLS = (2, 3, 4, 5)  # b"\x80" + protocol byte opens every pickle since protocol 2
_JOBLIB_COMPRESSED = (  # zlib, gzip, bz2, xz, lzma, lz4 prefixes of joblib's compressed dumps
    b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x1f\x8b", b"BZh", b"\xfd7zXZ",
    b"\x5d\x00\x00", b'\x04"M\x18',
)  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class Codebook:
    """K centroids of dimension D as float32 [K, D]; unit id i is `centroids[i]`."""

    centroids: np.ndarray

    def __post_init__(self) -> None:
        centroids = np.asarray(self.centroids)
        if centroids.ndim != 2 or 0 in centroids.shape:
            raise JaxslmError(f"a codebook is a [K, D] matrix, got shape {centroids.shape}")
        if not np.issubdtype(centroids.dtype, np.number) or not np.isfinite(centroids).all():
            raise JaxslmError(f"codebook centroids must be finite numbers ({centroids.dtype})")
        object.__setattr__(self, "centroids", np.ascontiguousarray(centroids, dtype=np.float32))

    @property
    def num_units(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    def save_npy(self, path: str | os.PathLike) -> Path:
        """Write the centroids as `.npy` atomically (`jaxslm.fsutil.atomic_file`): readers,
        and a run after a kill, see the whole file or none."""
        with atomic_file(path) as staging, open(staging, "wb") as handle:
            np.save(handle, self.centroids, allow_pickle=False)
        return Path(path)


def converted_path(pickle_path: str | os.PathLike) -> Path:
    """Where the `.npy` conversion of a pickled codebook lives: `<stem>.npy` beside it."""
    pickle_path = Path(pickle_path)
    target = pickle_path.with_suffix(".npy")
    return target if target != pickle_path else pickle_path.with_name(pickle_path.name + ".npy")


def load_codebook(path: str | os.PathLike, trust_pickle: bool = False) -> Codebook:
    """Read a codebook from `.npy`, safetensors or a joblib-pickled sklearn k-means model.

    The format is found from the content, not the suffix. A safetensors file holds one tensor
    (any name), or names the centroids `centroids`. A pickle is read through its converted
    `.npy` (`converted_path`) when that was converted from a pickle of the same content (its
    SHA-256 is kept beside it: file times survive copies and moves, so they cannot tell);
    otherwise it is refused unless `trust_pickle`, then unpickled (needs joblib and
    scikit-learn), its `cluster_centers_` converted to that `.npy` with a warning, and
    returned. An existing `.npy` not known to come from this content is never replaced: the
    load is refused, naming both files.
    """
    path = Path(path)
    if not path.is_file():
        raise JaxslmError(f"{path}: no such codebook file")
    kind = _sniff(path)
    if kind == "npy":
        return _from_array(_read_npy(path), path)
    if kind == "safetensors":
        return _from_array(_read_safetensors(path), path)
    if kind != "pickle":
        raise JaxslmError(
            f"{path}: not a codebook; expected a [K, D] .npy, a safetensors file with one tensor "
            f"(or one named '{SAFETENSORS_KEY}'), or a joblib-pickled sklearn k-means model"
        )
    converted = converted_path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    source = _source_path(converted)
    if converted.is_file() and source.is_file() and source.read_text().strip() == digest:
        return _from_array(_read_npy(converted), converted)
    if not trust_pickle:
        raise JaxslmError(_untrusted_message(path, converted))
    if converted.exists():
        raise JaxslmError(
            f"{converted} exists and is not known to come from the content of {path} (no "
            f"matching {source.name}), so it is not replaced: pass {converted} itself as "
            "--codebook to use it, or move or delete it to convert the pickle"
        )
    codebook = _from_array(_unpickle_centers(path), path)
    log.warning("converting pickled k-means %s to %s; later loads read the .npy", path, converted)
    try:
        codebook.save_npy(converted)
        atomic_write_text(source, digest + "\n")
    except OSError as error:
        log.warning("could not write %s (%s); the pickle stays the source", converted, error)
    return codebook


def _untrusted_message(path: Path, converted: Path) -> str:
    """Why the pickle `path` is refused without trust, and how to go on."""
    refused = (
        f"{path} is a pickle (joblib/sklearn k-means); unpickling can run arbitrary code, so it "
        "is refused by default"
    )
    if converted.exists():
        return (
            f"{refused}. {converted} is not known to come from this pickle's content, so it is "
            "not used: pass it itself as --codebook to use it, or move or delete it and pass "
            "--trust-pickle (trust_pickle=True) to convert the pickle"
        )
    return (
        f"{refused}. If you trust its source, pass --trust-pickle (trust_pickle=True) once: its "
        f"centroids are converted to {converted}, which later loads read without trust"
    )


def _source_path(converted: Path) -> Path:
    """Where the SHA-256 of the pickle that `converted` came from is kept."""
    return converted.with_name(converted.name + ".sha256")


def _sniff(path: Path) -> str | None:
    """'npy', 'safetensors', 'pickle' (plain or joblib-compressed) or None, from magic bytes."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if len(head) > 8 and head[8:9] == b"{":
        header_size = int.from_bytes(head[:8], "little")
        if 0 < header_size <= path.stat().st_size - 8:
            return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in _PICKLE_PROTOCOLS:
        return "pickle"
    if head.startswith(_JOBLIB_COMPRESSED):
        return "pickle"
    return None


def _from_array(array: np.ndarray, path: Path) -> Codebook:
    try:
        return Codebook(array)
    except JaxslmError as error:
        raise JaxslmError(f"{path}: {error}") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise JaxslmError(f"{path}: cannot read the .npy codebook ({error})") from error


def _read_safetensors(path: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except Exception as error:  # safetensors raises its own and builtin types
        raise JaxslmError(f"{path}: cannot read the safetensors codebook ({error})") from error
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    if SAFETENSORS_KEY in tensors:
        return tensors[SAFETENSORS_KEY]
    raise JaxslmError(
        f"{path}: holds tensors {sorted(tensors)}; a codebook file holds one tensor, "
        f"or names the centroids '{SAFETENSORS_KEY}'"
    )


def _unpickle_centers(path: Path) -> np.ndarray:
    """`cluster_centers_` of the (trusted) joblib-pickled estimator at `path`."""
    try:
        import joblib
    except ImportError as error:
        raise JaxslmError(
            f"{path}: reading a pickled k-means model needs joblib and scikit-learn; "
            "pip install joblib scikit-learn"
        ) from error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about pickles from other versions
        try:
            estimator = joblib.load(path)
        except Exception as error:  # anything the pickle does can fail
            raise JaxslmError(
                f"{path}: cannot unpickle the k-means model ({type(error).__name__}: {error}); "
                "it needs scikit-learn installed and an intact file"
            ) from error
    centers = getattr(estimator, "cluster_centers_", None)
    if centers is None:
        raise JaxslmError(
            f"{path}: the pickle holds a {type(estimator).__name__} without cluster_centers_; "
            "expected a fitted sklearn KMeans or MiniBatchKMeans"
        )
    return np.asarray(centers)


def _scores(features: jax.Array, centroids: jax.Array) -> jax.Array:
    """||c||^2 - 2 x.c per row and centroid: the squared distance less the row's ||x||^2.

    As sklearn's predict, the per-row constant ||x||^2 is left out of the argmin; float32
    throughout, with full-precision matmuls.
    """
    centroid_sq = jnp.sum(centroids * centroids, axis=-1)
    return centroid_sq - 2.0 * jnp.matmul(features, centroids.T, precision=HIGHEST)


@jax.jit
def _nearest(features: jax.Array, centroids: jax.Array) -> jax.Array:
    return jnp.argmin(_scores(features, centroids), axis=-1).astype(jnp.int32)


def _bucket(rows: int, chunk_size: int) -> int:
    """Padded row count of one call: a power of two in [MIN_CHUNK, chunk_size]."""
    return min(chunk_size, max(MIN_CHUNK, 1 << (rows - 1).bit_length()))


def assign(
    features: np.ndarray | jax.Array,
    centroids: Codebook | np.ndarray | jax.Array,
    chunk_size: int = DEFAULT_CHUNK,
) -> np.ndarray:
    """Nearest-centroid unit ids: int32 [N] for features [N, D], [B, T] for [B, T, D].

    Rows go through one jitted kernel `chunk_size` at a time (padded to a power of two), so
    memory stays bounded and only a few shapes ever compile. Ties go to the lower id.
    """
    table = centroids.centroids if isinstance(centroids, Codebook) else centroids
    table = jnp.asarray(table, jnp.float32)
    if table.ndim != 2:
        raise JaxslmError(f"centroids must be [K, D], got shape {table.shape}")
    if not isinstance(features, jax.Array):
        features = np.asarray(features)
    shape, dim = features.shape, table.shape[1]
    if len(shape) not in (2, 3) or shape[-1] != dim:
        raise JaxslmError(
            f"features of shape {shape} do not fit a codebook of {table.shape[0]} centroids of "
            f"dimension {dim}; pass [N, {dim}] or [B, T, {dim}] from the layer it was fitted on"
        )
    if chunk_size < 1:
        raise JaxslmError(f"chunk_size must be positive, got {chunk_size}")
    flat = features.reshape(-1, dim)
    pending = []
    for start in range(0, flat.shape[0], chunk_size):
        rows = flat[start : start + chunk_size]
        size = _bucket(rows.shape[0], chunk_size)
        if isinstance(rows, jax.Array):
            padded = jnp.pad(rows.astype(jnp.float32), ((0, size - rows.shape[0]), (0, 0)))
        else:
            padded = np.zeros((size, dim), np.float32)
            padded[: rows.shape[0]] = rows
        pending.append((_nearest(padded, table), rows.shape[0]))
    ids = [np.asarray(chunk)[:count] for chunk, count in pending]
    return np.concatenate(ids or [np.zeros(0, np.int32)]).reshape(shape[:-1])


@functools.partial(jax.jit, static_argnames="k")
def _kmeans_plus_plus(points: jax.Array, key: jax.Array, k: int) -> jax.Array:
    """k rows of `points` by D^2 sampling (Arthur and Vassilvitskii, 2007)."""
    first = jax.random.randint(jax.random.fold_in(key, 0), (), 0, points.shape[0])
    centers = jnp.zeros((k, points.shape[1]), jnp.float32).at[0].set(points[first])
    nearest_sq = jnp.sum((points - points[first]) ** 2, axis=-1)

    def add_center(i, state):
        centers, nearest_sq = state
        pick = jax.random.categorical(jax.random.fold_in(key, i), jnp.log(nearest_sq))
        centers = centers.at[i].set(points[pick])
        nearest_sq = jnp.minimum(nearest_sq, jnp.sum((points - points[pick]) ** 2, axis=-1))
        return centers, nearest_sq

    return jax.lax.fori_loop(1, k, add_center, (centers, nearest_sq))[0]


@jax.jit
def _minibatch_step(centers, counts, batch, key, reassign, ratio):
    """One mini-batch update; returns (centers, counts, batch inertia).

    Each centroid becomes the mean of every row ever assigned to it (learning rate 1/count).
    When `reassign`, centroids whose count is below `ratio` times the largest jump to random
    batch rows and restart from the smallest kept count (as sklearn's MiniBatchKMeans).
    """
    k = centers.shape[0]
    scores = _scores(batch, centers)
    labels = jnp.argmin(scores, axis=-1)
    row_sq = jnp.sum(batch * batch, axis=-1)
    inertia = jnp.sum(jnp.maximum(jnp.min(scores, axis=-1) + row_sq, 0.0))
    onehot = jax.nn.one_hot(labels, k, dtype=jnp.float32)  # matmul, not scatter: deterministic
    batch_counts = onehot.sum(axis=0)
    sums = jnp.matmul(onehot.T, batch, precision=HIGHEST)
    new_counts = counts + batch_counts
    moved = (centers * counts[:, None] + sums) / jnp.maximum(new_counts, 1.0)[:, None]
    centers = jnp.where((batch_counts > 0)[:, None], moved, centers)
    starved = reassign & (new_counts < ratio * new_counts.max())
    rows = jax.random.choice(key, batch.shape[0], (k,), replace=batch.shape[0] < k)
    centers = jnp.where(starved[:, None], batch[rows], centers)
    floor = jnp.min(jnp.where(starved, jnp.inf, new_counts))
    return centers, jnp.where(starved, floor, new_counts), inertia


def fit_kmeans(
    features: np.ndarray,
    k: int,
    seed: int = 0,
    batch_size: int = 1024,
    steps: int = 1000,
    init_size: int | None = None,
    reassignment_ratio: float = 0.01,
    progress: bool = False,
) -> Codebook:
    """Fit k centroids to `features` [N, D] by mini-batch k-means (Sculley, 2010) in JAX.

    Init: k-means++ on `init_size` distinct rows (default 3 * max(batch_size, k), at most N).
    Each step draws `batch_size` rows with replacement and moves every centroid to the mean of
    all rows it has been assigned so far. Every 10 steps, except the last 10, starved centroids
    (count below `reassignment_ratio` times the largest; 0 disables) jump to batch rows.
    Rows are drawn by numpy and k-means++ by a JAX key, both from `seed`: one seed gives one
    codebook on a given backend. Only sampled rows are read, so `features` may be a memmap.
    """
    shape = getattr(features, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise JaxslmError(f"features must be a non-empty [N, D] array, got shape {shape}")
    n = shape[0]
    if not 1 <= k <= n:
        raise JaxslmError(f"k must be in [1, N={n}] (one row per centroid at least), got {k}")
    if batch_size < 1 or steps < 1:
        raise JaxslmError(f"batch_size and steps must be positive, got {batch_size}, {steps}")
    if not 0.0 <= reassignment_ratio < 1.0:
        raise JaxslmError(f"reassignment_ratio must be in [0, 1), got {reassignment_ratio}")
    init_size = min(n, init_size or 3 * max(batch_size, k))
    if init_size < k:
        raise JaxslmError(f"init_size must be at least k={k}, got {init_size}")

    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    sample = np.asarray(features[np.sort(rng.choice(n, init_size, replace=False))], np.float32)
    if not np.isfinite(sample).all():
        raise JaxslmError("features hold NaN or infinite values; clean them before fitting")
    centers = _kmeans_plus_plus(jnp.asarray(sample), jax.random.fold_in(key, 0), k)
    counts = jnp.zeros(k, jnp.float32)
    ratio = jnp.float32(reassignment_ratio)
    bar = tqdm(range(steps), desc=f"k-means (k={k})", disable=not progress)
    for step in bar:
        batch = np.asarray(features[np.sort(rng.integers(0, n, batch_size))], np.float32)
        reassign = (step + 1) % REASSIGN_EVERY == 0 and step + REASSIGN_EVERY < steps
        centers, counts, inertia = _minibatch_step(
            centers, counts, batch, jax.random.fold_in(key, step + 1), reassign, ratio
        )
        if progress and (step % 50 == 0 or step == steps - 1):
            bar.set_postfix(inertia_per_row=float(inertia) / batch_size)
    return Codebook(np.asarray(centers))
