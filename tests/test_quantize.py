"""K-means codebooks: assignment against numpy and sklearn, pickles under trust, fitting."""

import logging
import os
import textwrap

import jax.numpy as jnp
import joblib
import numpy as np
import pytest
from processes import kill_once_writing
from safetensors.numpy import save_file
from sklearn.cluster import KMeans, MiniBatchKMeans

from jaxslm.errors import JaxslmError
from jaxslm.speech import quantize
from jaxslm.speech.quantize import Codebook, assign, converted_path, fit_kmeans, load_codebook

RNG = np.random.default_rng(0)
FEATURES = RNG.normal(size=(700, 12)).astype(np.float32)
CENTROIDS = RNG.normal(size=(37, 12)).astype(np.float32)


def numpy_nearest(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Exact float64 distances, argmin per row: random data makes ties impossible."""
    diff = features.astype(np.float64)[:, None, :] - centroids.astype(np.float64)[None]
    return np.argmin((diff**2).sum(-1), axis=-1)


@pytest.mark.parametrize("chunk_size", [256, 300, 8192])  # padded last chunk, exact, one call
def test_assign_matches_numpy_argmin(chunk_size):
    ids = assign(FEATURES, CENTROIDS, chunk_size=chunk_size)
    assert ids.dtype == np.int32 and ids.shape == (700,)
    np.testing.assert_array_equal(ids, numpy_nearest(FEATURES, CENTROIDS))


def test_assign_batched_and_device_inputs():
    expected = numpy_nearest(FEATURES, CENTROIDS).reshape(7, 100)
    batched = FEATURES.reshape(7, 100, 12)
    np.testing.assert_array_equal(assign(batched, Codebook(CENTROIDS)), expected)
    np.testing.assert_array_equal(assign(jnp.asarray(batched), jnp.asarray(CENTROIDS)), expected)
    assert assign(FEATURES[:0], CENTROIDS).shape == (0,)
    with pytest.raises(JaxslmError, match="dimension 12"):
        assign(FEATURES[:, :10], CENTROIDS)


def test_assign_matches_sklearn_predict():
    model = KMeans(n_clusters=16, n_init=1, random_state=0).fit(FEATURES[:400])
    held_out = FEATURES[400:]
    np.testing.assert_array_equal(assign(held_out, model.cluster_centers_), model.predict(held_out))


def pickled_kmeans(path, compress=0, seed=0) -> np.ndarray:
    """A real fitted sklearn MiniBatchKMeans dumped by joblib, as textless ships codebooks."""
    model = MiniBatchKMeans(n_clusters=8, batch_size=64, n_init=1, random_state=seed)
    model.fit(FEATURES)
    joblib.dump(model, path, compress=compress)
    return model.cluster_centers_


def test_pickled_codebook_needs_trust_once(tmp_path, caplog, monkeypatch):
    path = tmp_path / "mhubert_L11_km8.bin"
    centers = pickled_kmeans(path)
    with pytest.raises(JaxslmError, match="pickle") as refused:
        load_codebook(path)
    assert "--trust-pickle" in str(refused.value) and "arbitrary code" in str(refused.value)
    assert not converted_path(path).exists()

    with caplog.at_level(logging.WARNING, logger=quantize.__name__):
        codebook = load_codebook(path, trust_pickle=True)
    np.testing.assert_array_equal(codebook.centroids, centers.astype(np.float32))
    assert converted_path(path) == tmp_path / "mhubert_L11_km8.npy"
    assert "converting" in caplog.text and str(converted_path(path)) in caplog.text
    np.testing.assert_array_equal(np.load(converted_path(path)), codebook.centroids)

    def no_unpickling(*_):
        raise AssertionError("the converted .npy should be read, not the pickle")

    monkeypatch.setattr(joblib, "load", no_unpickling)
    np.testing.assert_array_equal(load_codebook(path).centroids, codebook.centroids)

    # another codebook moved onto the same name, its time older than the .npy's (mv, tar and
    # cp -p keep file times): the .npy is keyed by the pickle's content, so it is not used
    monkeypatch.undo()
    other = pickled_kmeans(path, seed=1)
    earlier = converted_path(path).stat().st_mtime_ns - 10**9
    os.utime(path, ns=(earlier, earlier))
    with pytest.raises(JaxslmError, match="not known to come from this pickle's content"):
        load_codebook(path)
    converted_path(path).unlink()  # the refusal's fix: move or delete the old .npy
    np.testing.assert_array_equal(
        load_codebook(path, trust_pickle=True).centroids, other.astype(np.float32)
    )


@pytest.mark.parametrize("sidecar", [None, "0" * 64])  # the user's own .npy, another pickle's
def test_a_npy_not_from_this_pickle_is_never_replaced(tmp_path, sidecar):
    path = tmp_path / "km8.bin"
    pickled_kmeans(path)
    mine = tmp_path / "km8.npy"
    np.save(mine, CENTROIDS)
    if sidecar:
        (tmp_path / "km8.npy.sha256").write_text(sidecar + "\n")
    before = mine.read_bytes()
    for trust in (False, True):
        with pytest.raises(JaxslmError) as refused:
            load_codebook(path, trust_pickle=trust)
        message = str(refused.value)
        assert str(mine) in message and str(path) in message and "--codebook" in message
        assert "move or delete it" in message and mine.read_bytes() == before
    np.testing.assert_array_equal(load_codebook(mine).centroids, CENTROIDS)


KILLED_CONVERSION = textwrap.dedent(
    """
    import sys, time
    from jaxslm.speech import quantize

    def save(handle, array, allow_pickle):
        handle.write(b"\\x93NUMPY")  # the start of the file, then the process is killed
        handle.flush()
        print("writing", flush=True)
        time.sleep(600)

    quantize.np.save = save
    quantize.load_codebook(sys.argv[1], trust_pickle=True)
    """
)


def test_a_conversion_killed_mid_write_leaves_no_npy_and_is_cleaned_up(tmp_path, capsys):
    path = tmp_path / "km8.bin"
    centers = pickled_kmeans(path)
    kill_once_writing(KILLED_CONVERSION, [str(path)])
    (staging,) = [p for p in tmp_path.iterdir() if p.name.startswith(".km8.npy.partial-")]
    assert not converted_path(path).exists()
    load_codebook(path, trust_pickle=True)
    np.testing.assert_array_equal(np.load(converted_path(path)), centers.astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["km8.bin", "km8.npy", "km8.npy.sha256"]
    assert f"removed stale staging file {staging}" in capsys.readouterr().err


def test_pickles_are_found_by_content_not_suffix(tmp_path):
    path = tmp_path / "codebook.npy"  # a compressed joblib pickle behind a misleading suffix
    centers = pickled_kmeans(path, compress=3)
    with pytest.raises(JaxslmError, match="--trust-pickle"):
        load_codebook(path)
    codebook = load_codebook(path, trust_pickle=True)
    np.testing.assert_array_equal(codebook.centroids, centers.astype(np.float32))
    assert converted_path(path) == tmp_path / "codebook.npy.npy"
    np.testing.assert_array_equal(load_codebook(converted_path(path)).centroids, codebook.centroids)


def test_npy_and_safetensors_codebooks(tmp_path):
    codebook = Codebook(CENTROIDS.astype(np.float64))
    assert codebook.centroids.dtype == np.float32 and (codebook.num_units, codebook.dim) == (37, 12)
    np.testing.assert_array_equal(
        load_codebook(codebook.save_npy(tmp_path / "a.npy")).centroids, CENTROIDS
    )
    save_file({"anything": CENTROIDS}, tmp_path / "one.safetensors")
    np.testing.assert_array_equal(load_codebook(tmp_path / "one.safetensors").centroids, CENTROIDS)
    save_file({"centroids": CENTROIDS, "counts": np.ones(37, np.float32)}, tmp_path / "two.bin")
    np.testing.assert_array_equal(load_codebook(tmp_path / "two.bin").centroids, CENTROIDS)
    save_file({"a": CENTROIDS, "b": CENTROIDS}, tmp_path / "ambiguous.safetensors")
    with pytest.raises(JaxslmError, match="'centroids'"):
        load_codebook(tmp_path / "ambiguous.safetensors")
    np.save(tmp_path / "flat.npy", CENTROIDS[0])
    with pytest.raises(JaxslmError, match=r"flat.npy: a codebook is a \[K, D\] matrix"):
        load_codebook(tmp_path / "flat.npy")
    (tmp_path / "notes.bin").write_text("not a codebook")
    with pytest.raises(JaxslmError, match="notes.bin: not a codebook"):
        load_codebook(tmp_path / "notes.bin")
    with pytest.raises(JaxslmError, match="no such codebook"):
        load_codebook(tmp_path / "missing.npy")


def separated_clusters(seed: int = 0):
    """Six true centers far apart (>= 10 in 8-D) and 1200 points within 0.1 of them."""
    rng = np.random.default_rng(seed)
    true = rng.normal(scale=8.0, size=(6, 8)).astype(np.float32)
    labels = rng.integers(0, 6, size=1200)
    return true, (true[labels] + rng.normal(scale=0.1, size=(1200, 8))).astype(np.float32)


def test_fit_kmeans_recovers_separated_centers_deterministically():
    true, features = separated_clusters()
    codebook = fit_kmeans(features, k=6, seed=3, batch_size=128, steps=60)
    distance = np.linalg.norm(codebook.centroids[:, None] - true[None], axis=-1)
    assert sorted(distance.argmin(axis=1)) == list(range(6))  # a permutation of the true centers
    assert distance.min(axis=1).max() < 0.05
    again = fit_kmeans(features, k=6, seed=3, batch_size=128, steps=60)
    np.testing.assert_array_equal(again.centroids, codebook.centroids)
    other = fit_kmeans(features, k=6, seed=4, batch_size=128, steps=60)
    assert not np.array_equal(other.centroids, codebook.centroids)
    with pytest.raises(JaxslmError, match="k must be"):
        fit_kmeans(features[:5], k=6)


def test_starved_centroid_is_reassigned_to_a_batch_row():
    _, features = separated_clusters()
    batch = jnp.asarray(features[:128])
    centers = jnp.concatenate([batch[:5], jnp.full((1, 8), 1e3)])  # the last one gets no rows
    counts = jnp.asarray([50.0] * 5 + [0.0])
    args = (centers, counts, batch, quantize.jax.random.key(0))
    kept, kept_counts, _ = quantize._minibatch_step(*args, False, 0.01)
    assert kept[5, 0] == 1e3 and kept_counts[5] == 0
    moved, moved_counts, _ = quantize._minibatch_step(*args, True, 0.01)
    assert any(np.array_equal(moved[5], row) for row in np.asarray(batch))
    assert moved_counts[5] == moved_counts[:5].min()
