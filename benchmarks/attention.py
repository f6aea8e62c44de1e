"""Packed causal attention: each jaxslm kernel beside PyTorch's, exactness and speed.

Every variant runs the same packed rows (`--documents` documents of random lengths per row,
segment ids) of query [B,T,H,D] and key/value [B,T,KV,D] (GQA), forward and forward +
backward (a random output cotangent). Errors are the max abs differences of the output and
of dq/dk/dv from a float32 reference (jaxslm's dense XLA attention under the segment-causal
mask); "causal only" variants are compared with the causal reference without segments.
TFLOP/s counts causal FLOPs: forward 4·B·H·T²·D / 2, forward + backward 3.5x that
(FlashAttention's convention).

  jaxslm xla | cudnn | pallas | splash   the seam (jaxslm.models.attention) with that kernel;
                                         on the CPU pallas and splash run interpreted
  jaxslm cudnn packed (experimental)     cuDNN's ragged layout through JAX's private API:
                                         per-document lengths and row-local offsets, -1 in
                                         unused slots (also the last offset column),
                                         PADDING_CAUSAL, BTNH; KV heads repeated where JAX
                                         scales kv offsets by the query heads. Not in the
                                         seam until this check finds it exact on a GPU.
  torch sdpa causal (no segments)        F.scaled_dot_product_attention(is_causal=True): the
                                         ceiling, not usable for packing
  torch flex_attention                   document-causal block mask, torch.compile (CUDA)

    python benchmarks/attention.py [--shape 8,2048,32,8,64] [--documents 4]
        [--dtype bfloat16|float32] [--repeat 10] [--variants a,b] [--json PATH]

Defaults: the Llama-3.2-1B attention shape (32 query heads, 8 KV heads, head dim 64) at
8 x 2048 in bf16 on GPUs; 2 x 256 with 4 heads in float32 on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxslm import backend  # noqa: E402
from jaxslm.models.attention import Segments, attention  # noqa: E402
from jaxslm.models.attention_xla import dot_product_attention, segment_causal_mask  # noqa: E402

KERNELS = ("xla", "cudnn", "pallas", "splash")


def packed_segments(batch: int, length: int, documents: int) -> np.ndarray:
    """Segment ids [batch, length]: `documents` documents of random lengths per row."""
    rng = np.random.default_rng(0)
    segments = np.empty((batch, length), np.int32)
    for row in range(batch):
        cuts = np.sort(rng.choice(np.arange(16, length - 16), documents - 1, replace=False))
        segments[row] = np.searchsorted(cuts, np.arange(length), side="right") + 1
    return segments


def packed_arguments(segment_ids: jax.Array, documents: int):
    """cuDNN ragged-layout arguments from segment ids (each row: contiguous runs of ids,
    at most `documents` runs): lengths [B, M] and row-local start offsets [B, M + 1], -1 in
    every unused slot, the extra last offset column included."""
    rows, length = segment_ids.shape
    previous = jnp.concatenate([jnp.full((rows, 1), -1, jnp.int32), segment_ids[:, :-1]], axis=1)
    is_start = segment_ids != previous
    run = jnp.cumsum(is_start, axis=1, dtype=jnp.int32) - 1
    row = jnp.arange(rows)[:, None]
    position = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (rows, length))
    slots = max(documents, 2)
    starts = jnp.full((rows, slots), -1, jnp.int32)
    starts = starts.at[row, jnp.where(is_start, run, slots)].set(position, mode="drop")
    lengths = jnp.zeros((rows, slots), jnp.int32).at[row, run].add(1, mode="drop")
    lengths = jnp.where(starts >= 0, lengths, -1)
    offsets = jnp.concatenate([starts, jnp.full((rows, 1), -1, jnp.int32)], axis=1)
    return lengths, offsets


def cudnn_packed(query, key, value, segment_ids, documents: int):
    """The experimental ragged-layout cuDNN call (see the module docstring)."""
    import inspect

    from jax._src.cudnn import fused_attention_stablehlo as fused

    if "N_kv" not in inspect.getsource(fused._fix_seqlen_offsets):
        groups = query.shape[2] // key.shape[2]  # this JAX scales kv offsets by query heads
        key, value = jnp.repeat(key, groups, axis=2), jnp.repeat(value, groups, axis=2)
    lengths, offsets = packed_arguments(segment_ids, documents)
    return fused.dot_product_attention(
        query,
        key,
        value,
        None,
        None,
        lengths,
        lengths,
        offsets,
        offsets,
        scale=1.0 / math.sqrt(query.shape[-1]),
        mask_type=fused.MaskType.PADDING_CAUSAL,
        qkv_layout="BTNH",
    )


def jax_variants(documents: int) -> dict[str, tuple[str, Callable]]:
    """name -> (reference kind, fn(q, k, v, segment_ids)) for the kernels this platform runs."""
    on = backend.platform()
    variants = {}
    for kernel in KERNELS:
        if kernel == "xla" or on in backend.KERNEL_PLATFORMS[kernel]:
            variants[f"jaxslm {kernel}"] = (
                "segments",
                lambda q, k, v, s, kernel=kernel: attention(q, k, v, Segments(s), kernel=kernel),
            )
    if on == "gpu":
        variants["jaxslm cudnn packed (experimental)"] = (
            "segments",
            lambda q, k, v, s: cudnn_packed(q, k, v, s, documents),
        )
    return variants


def median_seconds(run: Callable[[], object], repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def errors(got, want) -> dict[str, float]:
    """Max abs differences of (out, dq, dk, dv) from the reference's."""
    names = ("out_err", "dq_err", "dk_err", "dv_err")
    return {
        name: float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))
        for name, a, b in zip(names, got, want, strict=True)
    }


def measure_jax(fn, arrays, reference, repeat: int) -> dict:
    query, key, value, cotangent, segment_ids = arrays

    def forward(q, k, v, s):
        return fn(q, k, v, s)

    def both(q, k, v, s, ct):
        out, pullback = jax.vjp(lambda a, b, c: fn(a, b, c, s), q, k, v)
        return out, pullback(ct)

    forward, both = jax.jit(forward), jax.jit(both)
    out, grads = both(query, key, value, segment_ids, cotangent)
    result = errors((out, *grads), reference)
    result["fwd_s"] = median_seconds(
        lambda: jax.block_until_ready(forward(query, key, value, segment_ids)), repeat
    )
    result["fwd_bwd_s"] = median_seconds(
        lambda: jax.block_until_ready(both(query, key, value, segment_ids, cotangent)), repeat
    )
    return result


def measure_torch(name: str, arrays, references, dtype: str, repeat: int) -> dict:
    """torch SDPA (causal only) or flex_attention (document-causal) on the same arrays."""
    import torch
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    query, key, value, cotangent, segment_ids = (
        torch.from_numpy(np.asarray(a, np.float32)).to(device) for a in arrays
    )
    heads = [t.to(torch_dtype).transpose(1, 2).contiguous() for t in (query, key, value)]
    cotangent = cotangent.to(torch_dtype).transpose(1, 2).contiguous()
    documents = segment_ids.to(torch.int32)
    if name == "torch sdpa causal (no segments)":
        reference = references["causal"]

        def run(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    else:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        reference = references["segments"]
        batch, length = documents.shape

        def document_causal(b, h, q_index, kv_index):
            same = documents[b, q_index] == documents[b, kv_index]
            return same & (q_index >= kv_index)

        block_mask = create_block_mask(document_causal, batch, None, length, length, device=device)
        compiled = torch.compile(flex_attention) if device == "cuda" else flex_attention

        def run(q, k, v):
            return compiled(q, k, v, block_mask=block_mask, enable_gqa=True)

    def synchronize():
        if device == "cuda":
            torch.cuda.synchronize()

    def forward():
        with torch.no_grad():
            run(*heads)
        synchronize()

    leaves = [t.detach().requires_grad_(True) for t in heads]

    def both():
        out = run(*leaves)
        grads = torch.autograd.grad(out, leaves, cotangent)
        synchronize()
        return out, grads

    out, grads = both()
    ours = [t.detach().float().transpose(1, 2).cpu().numpy() for t in (out, *grads)]
    result = errors(ours, reference)
    result["fwd_s"] = median_seconds(forward, repeat)
    result["fwd_bwd_s"] = median_seconds(both, repeat)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    on_cpu = backend.platform() == "cpu"
    parser.add_argument(
        "--shape",
        default="2,256,4,2,16" if on_cpu else "8,2048,32,8,64",
        help="B,T,H,KV,D (batch, length, query heads, KV heads, head dim)",
    )
    parser.add_argument("--documents", type=int, default=4, help="documents per row")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None)
    parser.add_argument("--repeat", type=int, default=3 if on_cpu else 10)
    parser.add_argument("--variants", default=None, help="comma-separated names (default all)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here as JSON")
    args = parser.parse_args()
    dtype = args.dtype or ("float32" if on_cpu else "bfloat16")
    batch, length, heads, kv_heads, head_dim = (int(x) for x in args.shape.split(","))

    segment_ids = jnp.asarray(packed_segments(batch, length, args.documents))
    keys = jax.random.split(jax.random.key(0), 4)
    query, cotangent = (jax.random.normal(k, (batch, length, heads, head_dim)) for k in keys[:2])
    key, value = (jax.random.normal(k, (batch, length, kv_heads, head_dim)) for k in keys[2:])

    def reference(mask):
        def run(q, k, v, ct):
            out, pullback = jax.vjp(lambda a, b, c: dot_product_attention(a, b, c, mask), q, k, v)
            return (out, *pullback(ct))

        return jax.jit(run)(query, key, value, cotangent)

    references = {
        "segments": reference(segment_causal_mask(segment_ids)),
        "causal": reference(segment_causal_mask(jnp.ones_like(segment_ids))),
    }
    cast = [a.astype(dtype) for a in (query, key, value, cotangent)]
    arrays = (*cast, segment_ids)

    variants: dict[str, Callable[[], dict]] = {}
    for name, (kind, fn) in jax_variants(args.documents).items():
        variants[name] = lambda fn=fn, kind=kind: measure_jax(
            fn, arrays, references[kind], args.repeat
        )
    for name in ("torch sdpa causal (no segments)", "torch flex_attention"):
        variants[name] = lambda name=name: measure_torch(
            name, arrays, references, dtype, args.repeat
        )
    chosen = args.variants.split(",") if args.variants else list(variants)

    forward_flops = 4 * batch * heads * length * length * head_dim / 2
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {dtype}")
    print(
        f"B {batch} T {length} H {heads} KV {kv_heads} D {head_dim}, {args.documents} documents "
        f"per row; causal forward {forward_flops / 1e9:.1f} GFLOP; median of {args.repeat}"
    )
    header = "| variant | out err | dq err | dk err | dv err | fwd ms | fwd TFLOP/s | fwd+bwd ms "
    print(header + "| fwd+bwd TFLOP/s |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in chosen:
        try:
            result = variants[name]()
            row = {
                "variant": name,
                **{k: result[k] for k in ("out_err", "dq_err", "dk_err", "dv_err")},
                "fwd_ms": 1e3 * result["fwd_s"],
                "fwd_tflops": forward_flops / result["fwd_s"] / 1e12,
                "fwd_bwd_ms": 1e3 * result["fwd_bwd_s"],
                "fwd_bwd_tflops": 3.5 * forward_flops / result["fwd_bwd_s"] / 1e12,
                "status": "ok",
            }
            print(
                f"| {name} | {row['out_err']:.3g} | {row['dq_err']:.3g} | {row['dk_err']:.3g} | "
                f"{row['dv_err']:.3g} | {row['fwd_ms']:.2f} | {row['fwd_tflops']:.3g} | "
                f"{row['fwd_bwd_ms']:.2f} | {row['fwd_bwd_tflops']:.3g} |",
                flush=True,
            )
        except Exception as error:  # a failing variant is a result; the others still run
            message = f"{type(error).__name__}: {error}".replace("\n", " ")[:300]
            row = {"variant": name, "status": f"failed: {message}"}
            print(f"| {name} | failed: {message} | | | | | | | |", flush=True)
            traceback.print_exc(file=sys.stderr)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    backend.add_gpu_flags()
    main()
