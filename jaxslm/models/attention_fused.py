"""Fused attention kernels for packed rows: cuDNN and Pallas Triton on NVIDIA GPUs, Pallas
splash attention on TPUs. Each takes query [B,T,H,D], key/value [B,T,KV,D] and segment ids
[B, T] (0 = padding), and returns [B, T, H, D]; none builds the [B, T, T] scores in memory.

Under a device mesh each kernel runs per shard (`jax.shard_map`): rows split over the batch
axes, heads over `tensor` when it divides both the query and the KV heads.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from jaxslm.models.attention_xla import visible
from jaxslm.sharding import logical_spec


def cudnn_attention(query, key, value, segment_ids, branch_ids=None, causal=True):
    """cuDNN's flash attention (`jax.nn.dot_product_attention(implementation="cudnn")`) with
    the segment mask (and the trunk/branch rule) as a dense boolean mask; GQA native."""
    mask = visible(segment_ids, segment_ids, branch_ids, branch_ids, causal=causal)
    return jax.nn.dot_product_attention(
        query,
        key,
        value,
        mask=mask[:, None],
        is_causal=causal,
        scale=1.0 / math.sqrt(query.shape[-1]),
        implementation="cudnn",
    )


def pallas_attention(query, key, value, segment_ids, causal=True, interpret=False):
    """The Pallas Triton flash attention of jax.experimental (segment ids native); each KV head
    is repeated over its query heads, which the kernel does not group."""
    from jax.experimental.pallas.ops.gpu import attention as triton

    groups = query.shape[2] // key.shape[2]
    length = query.shape[1]
    forward, backward = _tile(length, 128), _tile(length, 32)
    blocks = triton.BlockSizes(
        block_q=forward,
        block_k=forward,
        block_q_dkv=backward,
        block_kv_dkv=backward,
        block_q_dq=backward,
        block_kv_dq=backward,
    )
    return triton.mha(
        query,
        jnp.repeat(key, groups, axis=2),
        jnp.repeat(value, groups, axis=2),
        segment_ids,
        sm_scale=1.0 / math.sqrt(query.shape[-1]),
        causal=causal,
        block_sizes=blocks,
        interpret=interpret,
    )


def splash_attention(query, key, value, segment_ids, causal=True, interpret=False):
    """Pallas splash attention (TPU): the multi-query kernel over each KV head's group of
    query heads, per row; segment ids native."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    batch, length, heads, head_dim = query.shape
    kv_heads = key.shape[2]
    kernel = _splash_kernel(heads // kv_heads, length, causal, interpret)
    scaled = query * jnp.asarray(1.0 / math.sqrt(head_dim), query.dtype)
    grouped = scaled.reshape(batch, length, kv_heads, heads // kv_heads, head_dim)
    grouped = grouped.transpose(0, 2, 3, 1, 4)  # [B, KV, G, T, D]
    keys, values = key.transpose(0, 2, 1, 3), value.transpose(0, 2, 1, 3)  # [B, KV, T, D]

    def one_head(q, k, v, segments):
        return kernel(q, k, v, segment_ids=splash.SegmentIds(q=segments, kv=segments))

    per_row = jax.vmap(one_head, in_axes=(0, 0, 0, None))
    out = jax.vmap(per_row, in_axes=(0, 0, 0, 0))(grouped, keys, values, segment_ids)
    return out.transpose(0, 3, 1, 2, 4).reshape(query.shape)


@functools.lru_cache(maxsize=32)
def _splash_kernel(groups: int, length: int, causal: bool, interpret: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    shape = (length, length)
    mask = splash.MultiHeadMask(
        [splash.CausalMask(shape) if causal else splash.FullMask(shape) for _ in range(groups)]
    )
    block = _tile(length, 512)
    sizes = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    # The kernel holds its mask's block tables as arrays: made concrete, so that the cache
    # never keeps a tracer of the jitted function that first asked for it.
    with jax.ensure_compile_time_eval():
        return splash.make_splash_mqa_single_device(mask, block_sizes=sizes, interpret=interpret)


def _tile(length: int, largest: int) -> int:
    """The largest power of two up to `largest` that divides `length`."""
    return math.gcd(length, largest)


def on_shards(kernel, query, key, value, segment_ids, branch_ids=None):
    """`kernel(query, key, value, segment_ids[, branch_ids])`, per shard under an active mesh
    (rows over the batch axes, heads over `tensor` when it divides query and KV heads)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        args = (query, key, value, segment_ids) + (() if branch_ids is None else (branch_ids,))
        return kernel(*args)
    rows = logical_spec(("batch",), query.shape[:1], mesh)[0]
    heads = logical_spec(("heads",), query.shape[2:3], mesh)[0]
    if heads != logical_spec(("kv_heads",), key.shape[2:3], mesh)[0]:
        heads = None
    tokens = PartitionSpec(rows, None, heads, None)
    ids = PartitionSpec(rows, None)
    args, specs = (query, key, value, segment_ids), (tokens, tokens, tokens, ids)
    if branch_ids is not None:
        args, specs = (*args, branch_ids), (*specs, ids)
    sharded = jax.shard_map(kernel, in_specs=specs, out_specs=tokens, check_vma=False)
    return sharded(*args)
