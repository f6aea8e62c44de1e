"""Training throughput (tokens/s) and MFU of jaxslm's jitted train step beside transformers.

Both sides train the same decoder shape on the same random token batch with the same recipe:
AdamW (b1 0.9, b2 0.95, weight decay 0.1 on matrices only), global-norm clipping at 1.0,
float32 master parameters, float32 cross-entropy over every position, one device each.

  jaxslm  the jitted, donated train step of jaxslm.training
  torch   transformers Llama/Qwen2ForCausalLM, SDPA attention, torch.optim.AdamW (fused on
          CUDA), torch.compile on CUDA (eager when it fails); float32, or bfloat16 autocast
          when --dtype bfloat16

    python benchmarks/train_step.py [--shape tiny|small|20m|85m|qwen0.5b|llama1b] [--batch 8]
        [--seq-len 256] [--steps 10] [--warmup 3] [--repeat 3] [--dtype float32|bfloat16]
        [--side both|jaxslm|torch] [--remat none|full|save_dots|save_projections]
        [--documents 1] [--torch-compile auto|on|off]
        [--attention auto|xla|cudnn|pallas|splash] [--json PATH]

Issue 9's GPU measurement, for example:

    python benchmarks/train_step.py --shape llama1b --seq-len 2048 --batch 4 --documents 4 \
        --remat save_projections

The shapes are jaxslm.models.presets' with 500 speech units: qwen0.5b (Qwen2.5-0.5B), llama1b
(Llama-3.2-1B, its llama3 RoPE scaling included) and small carry the interleaved vocabulary of
slamkit's SIMS models (the text tokenizer's ids + 500 units + 2 markers), tiny, 20m and 85m
the speech-only one (502 ids). Peak memory is the device's peak on CUDA (jax
`memory_stats`, torch `max_memory_allocated`) and, on the CPU, what XLA's plan of the
compiled step holds: its buffers and temporaries (none for torch there).

`--attention` picks jaxslm's attention kernel (model.attention; `auto`: jaxslm.backend chooses
per device). `--json PATH` also writes the results as JSON: the config, then per side its
device, tokens/s, MFU (a fraction, null where the device's peak is unknown), peak bytes and
note (benchmarks/gpu_check.py reads it).

Each figure is the median over --repeat timed loops of --steps steps, after compilation and
--warmup untimed steps. The torch side runs first and frees its memory before
jaxslm starts (JAX preallocates most of the GPU). MFU counts model FLOPs: training = 3 x
forward, forward = 2 x tokens x matmul parameters (real vocabulary, LM head included, embedding
lookup excluded) + causal-halved attention (MaxText's convention; see jaxslm.scaling.flops).
Tokens count as batch x seq_len per step on both sides.

Both sides train on the same batch: seq_len + 1 random ids cut into tokens and next-token
targets, so each loss averages batch x seq_len targets. jaxslm's rows hold --documents
packed documents of random lengths (segment ids, restarted positions; loss_mask ones,
modality speech); torch's rows stay one causal sequence, since SDPA has no segment ids. What
still differs:

- jaxslm pads the vocabulary to a multiple of 128 (502 -> 512 for 20m and 85m): the LM head
  computes the padding columns, masked to -inf before the loss.
- jaxslm builds an explicit segment-causal mask and softmaxes materialised float32 scores;
  torch calls SDPA with is_causal (flash kernels, no mask tensor).
- jaxslm's step also computes the gradient norm for its metrics and the non-finite guard
  (the trainer's step as is); torch's clip_grad_norm_ computes the norm once.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import time

import jax
import numpy as np
import optax
import torch
from flax import nnx
from transformers import AutoConfig, AutoModelForCausalLM

from jaxslm.backend import ATTENTION_KERNELS
from jaxslm.hf.config_map import hf_architecture
from jaxslm.models.decoder import abstract_decoder
from jaxslm.models.model_config import REMAT_POLICIES, ModelConfig
from jaxslm.models.presets import speech_model_config
from jaxslm.scaling.flops import mfu, param_count, peak_flops_per_device
from jaxslm.sharding import make_mesh
from jaxslm.training.optimizer import make_optimizer
from jaxslm.training.placement import batch_sharding, state_shardings
from jaxslm.training.step import make_train_step, scratch_state
from jaxslm.vocab import SPEECH

# jaxslm.models.presets, each with 500 speech units: interleaved after the text tokenizer's ids
# (+ 2 markers) for the text LMs (small, qwen0.5b, llama1b), speech-only (502 ids) for the rest.
SHAPES = ("tiny", "small", "20m", "85m", "qwen0.5b", "llama1b")
UNITS = 500
LEARNING_RATE, BETAS, EPS, WEIGHT_DECAY, CLIP_NORM = 1e-4, (0.9, 0.95), 1e-8, 0.1, 1.0


@dataclasses.dataclass(frozen=True)
class Measured:
    """One side's result: median tokens/s and peak memory in bytes (None: not measured)."""

    tokens_per_second: float
    peak_bytes: int | None
    note: str = ""


def model_config(
    shape: str, seq_len: int, dtype: str, remat: str, attention: str = "auto"
) -> ModelConfig:
    """The preset `shape` with 500 speech units, float32 parameters, `dtype` compute, `remat`,
    the attention kernel `attention` and room for `seq_len` positions."""
    cfg = speech_model_config(shape, UNITS, dtype=dtype, remat=remat, attention=attention)
    return cfg.replace(max_position_embeddings=max(seq_len, cfg.max_position_embeddings))


def token_batch(cfg: ModelConfig, batch: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The shared random batch: input tokens and next-token targets, both [batch, seq_len]."""
    sequences = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq_len + 1))
    return sequences[:, :-1], sequences[:, 1:]


def packed_layout(batch: int, seq_len: int, documents: int) -> tuple[np.ndarray, np.ndarray]:
    """(segment ids, positions) [batch, seq_len] of rows packed with `documents` documents of
    random lengths each (1: one document filling the row)."""
    rng = np.random.default_rng(1)
    segments = np.empty((batch, seq_len), np.int32)
    positions = np.empty((batch, seq_len), np.int32)
    for row in range(batch):
        cuts = np.sort(rng.choice(np.arange(1, seq_len), documents - 1, replace=False))
        starts = np.concatenate([[0], cuts])
        segments[row] = np.searchsorted(cuts, np.arange(seq_len), side="right") + 1
        positions[row] = np.arange(seq_len) - starts[segments[row] - 1]
    return segments, positions


def torch_model(cfg: ModelConfig) -> torch.nn.Module:
    """A randomly initialised transformers causal LM of `cfg`'s shape (float32, SDPA)."""
    hf_config = AutoConfig.for_model(**hf_architecture(cfg), use_cache=False)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(
        hf_config, attn_implementation="sdpa", dtype=torch.float32
    )


def torch_tokens_per_second(
    cfg: ModelConfig,
    batch: int,
    seq_len: int,
    steps: int,
    warmup: int,
    repeat: int,
    dtype: str,
    device: str,
    compile_model: bool,
) -> Measured:
    """Median tokens/s of transformers + PyTorch training steps on `device` ("cpu" | "cuda").

    One step: forward, float32 cross-entropy, backward, clip_grad_norm_(1.0), AdamW step.
    `cfg.remat` "full" turns on transformers' gradient checkpointing; `compile_model` runs the
    model under torch.compile, falling back to eager mode when its first step fails.
    """
    model = torch_model(cfg).to(device).train()
    if cfg.remat == "full":
        model.gradient_checkpointing_enable()
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    vectors = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": matrices, "weight_decay": WEIGHT_DECAY},
            {"params": vectors, "weight_decay": 0},
        ],
        lr=LEARNING_RATE,
        betas=BETAS,
        eps=EPS,
        fused=device == "cuda",
    )
    tokens, targets = (torch.from_numpy(a).to(device) for a in token_batch(cfg, batch, seq_len))
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    forward = torch.compile(model) if compile_model else model
    note = "torch.compile" if compile_model else "eager"

    def step() -> None:
        with autocast:
            logits = forward(input_ids=tokens).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, cfg.vocab_size), targets.reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    try:
        step()
    except Exception as error:  # torch.compile's failures have no common type
        if not compile_model:
            raise
        print(f"torch.compile failed ({type(error).__name__}: {error}); running eager")
        optimizer.zero_grad(set_to_none=True)
        forward, note = model, "eager (torch.compile failed)"
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeat):
        synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize()
        rates.append(steps * batch * seq_len / (time.perf_counter() - start))
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return Measured(statistics.median(rates), peak, note)


def jaxslm_tokens_per_second(
    cfg: ModelConfig,
    batch: int,
    seq_len: int,
    steps: int,
    warmup: int,
    repeat: int,
    dtype: str,
    device: str,
    documents: int,
) -> Measured:
    """Median tokens/s of jaxslm's jitted train step on one device, same recipe as the torch side.

    The step is jitted as jaxslm.training.trainer does it: state and batch shardings from
    jaxslm.training.placement on a one-device mesh, donated state, `jax.set_mesh`. `dtype` is
    the compute dtype (already in `cfg.dtype`); JAX picks `device` as its default backend.
    Rows hold `documents` packed documents each. Peak memory is the device's peak on CUDA,
    else what XLA's plan of the compiled step holds: its arguments and outputs (less those
    aliased by donation) and its temporary buffer.
    """
    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    schedule = optax.constant_schedule(LEARNING_RATE)
    optimizer = make_optimizer(
        schedule,
        b1=BETAS[0],
        b2=BETAS[1],
        eps=EPS,
        weight_decay=WEIGHT_DECAY,
        clip_norm=CLIP_NORM,
    )
    shardings = state_shardings(mesh, cfg, optimizer)
    rows = batch_sharding(mesh, (batch, seq_len))
    graphdef = nnx.split(abstract_decoder(cfg))[0]

    tokens, targets = token_batch(cfg, batch, seq_len)
    segments, positions = packed_layout(batch, seq_len, documents)
    host_batch = {
        "tokens": tokens.astype(np.int32),
        "targets": targets.astype(np.int32),
        "loss_mask": np.ones((batch, seq_len), np.float32),
        "segment_ids": segments,
        "positions": positions,
        "modality": np.full((batch, seq_len), SPEECH, np.int8),
    }
    with jax.set_mesh(mesh):
        state = jax.jit(lambda: scratch_state(cfg, 0, optimizer), out_shardings=shardings)()
        data = jax.device_put(host_batch, rows)
        step = (
            jax.jit(
                make_train_step(graphdef, optimizer, schedule),
                in_shardings=(shardings, rows),
                out_shardings=(shardings, None),
                donate_argnums=0,
            )
            .lower(state, data)
            .compile()
        )
        for _ in range(warmup):
            state, metrics = step(state, data)
        jax.block_until_ready(state)
        rates = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(steps):
                state, metrics = step(state, data)
            jax.block_until_ready((state, metrics))
            rates.append(steps * batch * seq_len / (time.perf_counter() - start))
    stats = jax.devices()[0].memory_stats() if device == "cuda" else None
    if stats and "peak_bytes_in_use" in stats:
        return Measured(statistics.median(rates), stats["peak_bytes_in_use"], "device peak")
    plan = step.memory_analysis()  # on the CPU its peak_memory_in_bytes counts arguments only
    planned = (
        plan.argument_size_in_bytes
        + plan.output_size_in_bytes
        - plan.alias_size_in_bytes
        + plan.temp_size_in_bytes
    )
    return Measured(statistics.median(rates), planned, "XLA's plan: buffers + temporaries")


def device_kind(side: str, device: str) -> str:
    """The accelerator name as jax reports it (CUDA's device name for torch), or "cpu"."""
    if side == "torch":
        return torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return jax.devices()[0].device_kind


def mfu_value(rate: float, cfg: ModelConfig, seq_len: int, kind: str, dtype: str) -> float | None:
    """MFU of one device as a fraction, or None where the device's peak is unknown."""
    peak = peak_flops_per_device(kind, dtype)
    return None if peak is None else mfu(rate, cfg, seq_len, peak)


def mfu_text(rate: float, cfg: ModelConfig, seq_len: int, kind: str, dtype: str) -> str:
    """MFU of one device as a percentage, or why there is none."""
    value = mfu_value(rate, cfg, seq_len, kind, dtype)
    if value is not None:
        return f"{100 * value:.1f}%"
    if kind.lower() == "cpu":
        return "n/a (CPU)"
    if dtype == "float32":
        return "n/a (float32)"
    return f"n/a (no peak for {kind!r})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=SHAPES, default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeat", type=int, default=3, help="timed loops per figure (median)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="compute dtype (default: bfloat16 on CUDA, float32 on CPU)",
    )
    parser.add_argument("--side", choices=["both", "jaxslm", "torch"], default="both")
    parser.add_argument(
        "--remat",
        choices=REMAT_POLICIES,
        default="none",
        help="jaxslm's model.remat; `full` also turns on torch's gradient checkpointing",
    )
    parser.add_argument(
        "--documents",
        type=int,
        default=1,
        help="documents packed per jaxslm row, of random lengths (torch rows stay one sequence)",
    )
    parser.add_argument(
        "--torch-compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="run the torch model under torch.compile (auto: on CUDA only)",
    )
    parser.add_argument(
        "--attention",
        choices=ATTENTION_KERNELS,
        default="auto",
        help="jaxslm's attention kernel, model.attention (auto: chosen per device)",
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    cfg = model_config(args.shape, args.seq_len, dtype, args.remat, args.attention)
    compile_torch = {"on": True, "off": False, "auto": device == "cuda"}[args.torch_compile]
    common = (cfg, args.batch, args.seq_len, args.steps, args.warmup, args.repeat, dtype, device)
    measure = {
        "torch": lambda: torch_tokens_per_second(*common, compile_torch),
        "jaxslm": lambda: jaxslm_tokens_per_second(*common, args.documents),
    }
    sides = ["torch", "jaxslm"] if args.side == "both" else [args.side]

    results: dict[str, Measured] = {}
    rows = []
    for side in sides:
        print(f"measuring {side} ...", flush=True)
        results[side] = result = measure[side]()
        if side == "torch" and device == "cuda":  # hand the memory back before JAX allocates
            gc.collect()
            torch.cuda.empty_cache()
        kind = device_kind(side, device)
        rate = result.tokens_per_second
        peak = "n/a" if result.peak_bytes is None else f"{result.peak_bytes / 2**30:.2f}"
        rows.append((side, kind, rate, mfu_text(rate, cfg, args.seq_len, kind, dtype), peak))

    print(
        f"\nshape {args.shape} ({param_count(cfg) / 1e6:.1f}M params, {cfg.family}, vocab "
        f"{cfg.vocab_size}), batch {args.batch} x seq {args.seq_len}, {dtype}, remat "
        f"{args.remat}, attention {args.attention}, {args.documents} document(s) per jaxslm row, "
        f"median of {args.repeat} x {args.steps} steps"
    )
    print("MFU: model FLOPs (train = 3 x forward, causal attention halved, real vocab) / peak")
    print(f"{'side':8s} {'device':24s} {'tokens/s':>12s} {'MFU':>14s} {'peak GiB':>9s}  notes")
    for (side, kind, rate, mfu_str, peak), result in zip(rows, results.values(), strict=True):
        print(f"{side:8s} {kind:24s} {rate:12,.0f} {mfu_str:>14s} {peak:>9s}  {result.note}")
    ratio = None
    if len(results) == 2:
        ratio = results["jaxslm"].tokens_per_second / results["torch"].tokens_per_second
        print(f"ratio jaxslm/torch: {ratio:.2f}x")
    if args.json:
        write_json(args, cfg, dtype, device, rows, results, ratio)


def write_json(args, cfg, dtype, device, rows, results, ratio) -> None:
    """The measured results and their config as JSON at `args.json`."""
    config = {k: v for k, v in vars(args).items() if k != "json"}
    config.update(dtype=dtype, device=device, params=param_count(cfg), vocab_size=cfg.vocab_size)
    sides = [
        {
            "side": side,
            "device_kind": kind,
            "tokens_per_second": rate,
            "mfu": mfu_value(rate, cfg, args.seq_len, kind, dtype),
            "peak_bytes": result.peak_bytes,
            "note": result.note,
        }
        for (side, kind, rate, _, _), result in zip(rows, results.values(), strict=True)
    ]
    with open(args.json, "w") as file:
        json.dump({"config": config, "results": sides, "ratio": ratio}, file, indent=1)


if __name__ == "__main__":
    from jaxslm.backend import add_gpu_flags

    add_gpu_flags()  # as `python -m jaxslm.train` does, before JAX starts its backend
    main()
