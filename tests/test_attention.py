"""The attention seam: every kernel on packed rows with GQA against a float64 reference written
here (outputs) and autodiff of a dense jnp reference written here (gradients), packed rows
against their documents run alone, sharded against one device, and the kernel choice.

On the CPU the Pallas kernels run in interpret mode; cuDNN is checked only where a GPU is.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxslm import backend
from jaxslm.errors import JaxslmError
from jaxslm.models.attention import Segments, attention
from jaxslm.models.attention_xla import CAUSAL_CHUNK
from jaxslm.sharding import make_mesh

BATCH, LENGTH, HEADS, KV_HEADS, HEAD_DIM = 2, 128, 4, 2, 16
CPU_KERNELS = ("xla", "pallas", "splash")
TOLERANCE = {jnp.float32: 2e-5, jnp.bfloat16: 3e-2}


def packed_segments(seed: int = 0) -> np.ndarray:
    """Rows of three documents of random lengths, then padding (segment 0)."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((BATCH, LENGTH), np.int32)
    for row in range(BATCH):
        cuts = np.sort(rng.choice(np.arange(8, LENGTH - 8), size=3, replace=False))
        for segment, (start, end) in enumerate(zip([0, *cuts[:-1]], cuts, strict=True), 1):
            rows[row, start:end] = segment
    return rows


def inputs(dtype=jnp.float32, seed: int = 0, length=LENGTH, heads=HEADS, kv_heads=KV_HEADS):
    keys = jax.random.split(jax.random.key(seed), 4)
    query = jax.random.normal(keys[0], (BATCH, length, heads, HEAD_DIM), dtype)
    key = jax.random.normal(keys[1], (BATCH, length, kv_heads, HEAD_DIM), dtype)
    value = jax.random.normal(keys[2], (BATCH, length, kv_heads, HEAD_DIM), dtype)
    cotangent = jax.random.normal(keys[3], (BATCH, length, heads, HEAD_DIM), dtype)
    return query, key, value, cotangent


def visible_numpy(segments, branches=None, causal=True) -> np.ndarray:
    """[B, T, T] bool from first principles: same segment, earlier or equal position, and the
    trunk or the query's own branch."""
    batch, length = segments.shape
    mask = np.zeros((batch, length, length), bool)
    for b in range(batch):
        for i in range(length):
            for j in range(length if not causal else i + 1):
                same = segments[b, i] == segments[b, j]
                if branches is not None:
                    same &= branches[b, j] in (0, branches[b, i])
                mask[b, i, j] = same
    return mask


def reference_numpy(query, key, value, mask) -> np.ndarray:
    """Float64 softmax attention, each query head reading its KV head h // (H / KV)."""
    q, k, v = (np.asarray(a, np.float64) for a in (query, key, value))
    group = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    scores = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(mask[:, None], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", weights, v)


def reference_jnp(query, key, value, mask):
    """The same in float32 jnp, for autodiff."""
    group = query.shape[2] // key.shape[2]
    key, value = jnp.repeat(key, group, axis=2), jnp.repeat(value, group, axis=2)
    scores = jnp.einsum("bthd,bshd->bhts", query, key) / np.sqrt(query.shape[-1])
    weights = jax.nn.softmax(jnp.where(mask[:, None], scores, -1e30), axis=-1)
    return jnp.einsum("bhts,bshd->bthd", weights, value)


def kernel_vjp(kernel, query, key, value, segments, cotangent):
    """(output, (dq, dk, dv)) of the seam with `kernel` for an output cotangent."""

    def run(q, k, v):
        return attention(q, k, v, segments, kernel=kernel)

    out, pullback = jax.vjp(jax.jit(run), query, key, value)
    return out, pullback(cotangent)


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_kernels_equal_the_reference_on_packed_rows(kernel):
    segments = packed_segments()
    query, key, value, cotangent = inputs()
    out, grads = kernel_vjp(kernel, query, key, value, Segments(jnp.asarray(segments)), cotangent)
    mask = visible_numpy(segments)
    np.testing.assert_allclose(out, reference_numpy(query, key, value, mask), atol=2e-5)
    as_f32 = [a.astype(jnp.float32) for a in (query, key, value)]
    _, pullback = jax.vjp(lambda q, k, v: reference_jnp(q, k, v, jnp.asarray(mask)), *as_f32)
    for ours, theirs in zip(grads, pullback(cotangent), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_packed_rows_equal_documents_alone(kernel, dtype):
    """Each document of a packed row gives the outputs and gradients it gives alone at the
    start of an otherwise empty row (at bf16 tolerance in bfloat16)."""
    segments = packed_segments(seed=1)
    query, key, value, cotangent = inputs(dtype, seed=1)
    packed_out, packed_grads = kernel_vjp(
        kernel, query, key, value, Segments(jnp.asarray(segments)), cotangent
    )
    tolerance = TOLERANCE[dtype]
    for row in range(BATCH):
        for segment in range(1, 4):
            where = np.flatnonzero(segments[row] == segment)
            size = where.size

            def alone(array, where=where, row=row):
                return jnp.zeros_like(array[:1]).at[0, : where.size].set(array[row, where])

            ids = np.zeros((1, LENGTH), np.int32)
            ids[0, :size] = 1
            out, grads = kernel_vjp(
                kernel,
                *map(alone, (query, key, value)),
                Segments(jnp.asarray(ids)),
                alone(cotangent),
            )
            np.testing.assert_allclose(
                np.float32(packed_out[row, where]), np.float32(out[0, :size]), atol=tolerance
            )
            for packed, single in zip(packed_grads, grads, strict=True):
                np.testing.assert_allclose(
                    np.float32(packed[row, where]), np.float32(single[0, :size]), atol=tolerance
                )


def test_xla_kernel_over_several_causal_chunks_equals_the_reference():
    """Rows longer than CAUSAL_CHUNK (two whole query chunks and a partial one, documents
    crossing the chunk boundaries): every chunk masks by its own queries' row positions, so
    outputs and gradients are the reference's."""
    length = 2 * CAUSAL_CHUNK + 44
    segments = np.array(
        [[1] * 100 + [2] * 130 + [3] * 60 + [0] * 10, [1] * 200 + [2] * 90 + [0] * 10], np.int32
    )
    assert segments.shape == (BATCH, length)
    query, key, value, cotangent = inputs(seed=7, length=length)
    out, grads = kernel_vjp("xla", query, key, value, Segments(jnp.asarray(segments)), cotangent)
    mask = visible_numpy(segments)
    np.testing.assert_allclose(out, reference_numpy(query, key, value, mask), atol=2e-5)
    _, pullback = jax.vjp(
        lambda q, k, v: reference_jnp(q, k, v, jnp.asarray(mask)), query, key, value
    )
    for ours, theirs in zip(grads, pullback(cotangent), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_query_heads_read_their_kv_head_when_groups_outnumber_kv_heads(kernel):
    """GQA with 8 query heads over 2 KV heads (groups of 4, unlike the other tests' 2 x 2):
    query head h reads KV head h // 4, as transformers' repeat_kv has it."""
    segments = packed_segments(seed=8)
    query, key, value, _ = inputs(seed=8, heads=8, kv_heads=2)
    out = jax.jit(lambda q, k, v, s: attention(q, k, v, Segments(s), kernel=kernel))(
        query, key, value, jnp.asarray(segments)
    )
    want = reference_numpy(query, key, value, visible_numpy(segments))
    np.testing.assert_allclose(out, want, atol=2e-5)


def test_branch_visibility_on_the_xla_kernel():
    """Branches see their segment's trunk and themselves; a second segment stays apart."""
    segments = np.array([[1] * 40 + [2] * 60 + [0] * 28] * BATCH, np.int32)
    branches = np.array([[0] * 20 + [1] * 10 + [2] * 10 + [0] * 30 + [1] * 30 + [0] * 28] * BATCH)
    query, key, value, _ = inputs()
    out = jax.jit(lambda q, k, v, s, b: attention(q, k, v, Segments(s, b), kernel="xla"))(
        query, key, value, jnp.asarray(segments), jnp.asarray(branches)
    )
    mask = visible_numpy(segments, branches)
    np.testing.assert_allclose(out, reference_numpy(query, key, value, mask), atol=2e-5)


def test_non_causal_attention_within_segments():
    segments = packed_segments(seed=2)
    query, key, value, _ = inputs(seed=2)
    for kernel in CPU_KERNELS:
        out = jax.jit(
            lambda q, k, v, s, kernel=kernel: attention(
                q, k, v, Segments(s), kernel=kernel, causal=False
            )
        )(query, key, value, jnp.asarray(segments))
        mask = visible_numpy(segments, causal=False)
        np.testing.assert_allclose(out, reference_numpy(query, key, value, mask), atol=2e-5)


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_sharded_kernels_equal_one_device(kernel):
    """On a data x fsdp x tensor mesh of 8 devices (rows over data and fsdp, heads over
    tensor), each kernel gives what it gives on one device, gradients included."""
    segments = jnp.asarray(np.concatenate([packed_segments(3), packed_segments(4)]))
    keys = jax.random.split(jax.random.key(5), 4)
    shape = (4, LENGTH, HEADS, HEAD_DIM)
    query, cotangent = (jax.random.normal(k, shape) for k in keys[:2])
    key, value = (jax.random.normal(k, (4, LENGTH, KV_HEADS, HEAD_DIM)) for k in keys[2:])
    single = kernel_vjp(kernel, query, key, value, Segments(segments), cotangent)
    with jax.set_mesh(make_mesh(data=2, fsdp=2, tensor=2)):
        sharded = kernel_vjp(kernel, query, key, value, Segments(segments), cotangent)
    for ours, theirs in zip(jax.tree.leaves(sharded), jax.tree.leaves(single), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize(
    "requested, on, dtype, length, branches, chosen",
    [
        ("auto", "cpu", jnp.float32, 128, False, "xla"),
        ("auto", "gpu", jnp.bfloat16, 2048, False, "cudnn"),
        ("auto", "gpu", jnp.bfloat16, 2048, True, "cudnn"),
        ("auto", "gpu", jnp.float32, 2048, False, "xla"),
        ("auto", "tpu", jnp.bfloat16, 2048, False, "splash"),
        ("auto", "tpu", jnp.bfloat16, 2048, True, "xla"),
        ("auto", "tpu", jnp.bfloat16, 160, False, "xla"),
        ("xla", "gpu", jnp.bfloat16, 2048, False, "xla"),
        ("pallas", "gpu", jnp.bfloat16, 2048, False, "pallas"),
        ("pallas", "cpu", jnp.float32, 160, False, "pallas"),
        ("splash", "cpu", jnp.float32, 256, False, "splash"),
    ],
)
def test_kernel_choice(requested, on, dtype, length, branches, chosen):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = backend.attention_kernel(
            requested, dtype=dtype, head_dim=64, length=length, branches=branches, on=on
        )
    assert got == chosen


@pytest.mark.parametrize(
    "requested, on, dtype, length, branches, reason",
    [
        ("pallas", "gpu", jnp.bfloat16, 2048, True, "trunk/branch"),
        ("splash", "tpu", jnp.bfloat16, 200, False, "multiple of 128"),
        ("cudnn", "gpu", jnp.float32, 2048, False, "bfloat16 or float16"),
    ],
)
def test_explicit_kernel_that_cannot_serve_a_call_falls_back_to_xla(
    requested, on, dtype, length, branches, reason
):
    with pytest.warns(UserWarning, match=reason):
        got = backend.attention_kernel(
            requested, dtype=dtype, head_dim=64, length=length, branches=branches, on=on
        )
    assert got == "xla"


@pytest.mark.parametrize(
    "requested, on, message",
    [
        ("cudnn", "cpu", "cannot run on cpu"),
        ("cudnn", "tpu", "cannot run on tpu"),
        ("splash", "gpu", "cannot run on gpu"),
        ("pallas", "tpu", "cannot run on tpu"),
        ("flash", "gpu", "is not one of"),
    ],
)
def test_kernel_refused_where_it_cannot_run(requested, on, message):
    with pytest.raises(JaxslmError, match=message):
        backend.attention_kernel(
            requested, dtype=jnp.bfloat16, head_dim=64, length=256, branches=False, on=on
        )


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN needs an NVIDIA GPU")
def test_cudnn_equals_the_reference_on_packed_rows():
    segments = packed_segments(seed=6)
    query, key, value, cotangent = inputs(jnp.bfloat16, seed=6)
    out, grads = kernel_vjp("cudnn", query, key, value, Segments(jnp.asarray(segments)), cotangent)
    mask = visible_numpy(segments)
    np.testing.assert_allclose(np.float32(out), reference_numpy(query, key, value, mask), atol=3e-2)
    as_f32 = [a.astype(jnp.float32) for a in (query, key, value)]
    _, pullback = jax.vjp(lambda q, k, v: reference_jnp(q, k, v, jnp.asarray(mask)), *as_f32)
    for ours, theirs in zip(grads, pullback(cotangent.astype(jnp.float32)), strict=True):
        np.testing.assert_allclose(np.float32(ours), theirs, atol=6e-2)
