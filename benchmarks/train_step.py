"""Training throughput (tokens/s) and MFU of jaxslm's jitted train step beside transformers.

Both sides train the same decoder shape on the same random token batch with the same recipe:
AdamW (b1 0.9, b2 0.95, weight decay 0.1 on matrices only), global-norm clipping at 1.0,
float32 master parameters, float32 cross-entropy over every position, one device each.

  jaxslm  the jitted, donated train step of jaxslm.training
  torch   transformers Llama/Qwen2ForCausalLM, SDPA attention, torch.optim.AdamW (fused on
          CUDA); float32, or bfloat16 autocast when --dtype bfloat16

    python benchmarks/train_step.py [--shape small] [--batch 8] [--seq-len 256] [--steps 10]
        [--warmup 3] [--repeat 3] [--dtype float32|bfloat16] [--side both|jaxslm|torch]

Each figure is the median over --repeat timed loops of --steps steps, after compilation and
--warmup untimed steps. The torch side runs first and frees its memory before
jaxslm starts (JAX preallocates most of the GPU). MFU counts model FLOPs: training = 3 x
forward, forward = 2 x tokens x matmul parameters (real vocabulary, LM head included, embedding
lookup excluded) + causal-halved attention (MaxText's convention; see jaxslm.scaling.flops).
Tokens count as batch x seq_len per step on both sides.

Both sides train on the same batch: seq_len + 1 random ids cut into tokens and next-token
targets, so each loss averages batch x seq_len targets. jaxslm's batch is one segment per row
(segment_ids and loss_mask ones, positions 0..seq_len-1, modality speech). What still differs:

- jaxslm pads the vocabulary to a multiple of 128 (502 -> 512 for 20m and 85m): the LM head
  computes the padding columns, masked to -inf before the loss.
- jaxslm builds an explicit segment-causal mask and softmaxes materialised float32 scores;
  torch calls SDPA with is_causal (flash kernels, no mask tensor).
- jaxslm's step also computes the gradient norm for its metrics and the non-finite guard
  (the trainer's step as is); torch's clip_grad_norm_ computes the norm once.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import jax
import numpy as np
import optax
import torch
from flax import nnx
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from jaxslm.models.config import ModelConfig
from jaxslm.models.decoder import abstract_decoder
from jaxslm.scaling.flops import mfu, param_count, peak_flops_per_device
from jaxslm.sharding import make_mesh
from jaxslm.training.optimizer import make_optimizer
from jaxslm.training.placement import batch_sharding, state_shardings
from jaxslm.training.step import make_train_step, scratch_state
from jaxslm.vocab import SPEECH

SHAPES: dict[str, dict] = {
    "tiny": dict(
        family="llama",
        vocab_size=512,
        hidden_size=64,
        intermediate_size=192,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        tie_word_embeddings=False,
    ),
    "small": dict(
        family="llama",
        vocab_size=1024,
        hidden_size=256,
        intermediate_size=768,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        tie_word_embeddings=False,
    ),
    # Cuervo & Marxer's speech-only Llamas (REFERENCE.md section 4), vocabulary 502; the MLP
    # width follows the Llama rule (8d/3 rounded up to a multiple of 256), our assumption.
    "20m": dict(
        family="llama",
        vocab_size=502,
        hidden_size=512,
        intermediate_size=1536,
        num_layers=6,
        num_heads=8,
        num_kv_heads=8,
        head_dim=64,
        tie_word_embeddings=False,
    ),
    "85m": dict(
        family="llama",
        vocab_size=502,
        hidden_size=768,
        intermediate_size=2048,
        num_layers=12,
        num_heads=12,
        num_kv_heads=12,
        head_dim=64,
        tie_word_embeddings=False,
    ),
    "qwen0.5b": dict(  # Qwen2.5-0.5B
        family="qwen2",
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_layers=24,
        num_heads=14,
        num_kv_heads=2,
        head_dim=64,
        tie_word_embeddings=True,
        qkv_bias=True,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
    ),
}
LEARNING_RATE, BETAS, EPS, WEIGHT_DECAY, CLIP_NORM = 1e-4, (0.9, 0.95), 1e-8, 0.1, 1.0


def model_config(shape: str, seq_len: int, dtype: str) -> ModelConfig:
    """The preset `shape` with float32 parameters and `dtype` compute."""
    return ModelConfig(**SHAPES[shape], max_position_embeddings=max(seq_len, 8192), dtype=dtype)


def token_batch(cfg: ModelConfig, batch: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The shared random batch: input tokens and next-token targets, both [batch, seq_len]."""
    sequences = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq_len + 1))
    return sequences[:, :-1], sequences[:, 1:]


def torch_model(cfg: ModelConfig) -> torch.nn.Module:
    """A randomly initialised transformers causal LM of `cfg`'s shape (float32, SDPA)."""
    shape = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        tie_word_embeddings=cfg.tie_word_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        max_position_embeddings=cfg.max_position_embeddings,
        use_cache=False,
    )
    if cfg.family == "llama":
        hf_config = LlamaConfig(**shape, attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
    else:
        hf_config = Qwen2Config(**shape, use_sliding_window=False)
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
) -> float:
    """Median tokens/s of transformers + PyTorch training steps on `device` ("cpu" | "cuda").

    One step: forward, float32 cross-entropy, backward, clip_grad_norm_(1.0), AdamW step.
    """
    model = torch_model(cfg).to(device).train()
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

    def step() -> None:
        with autocast:
            logits = model(input_ids=tokens).logits
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
    return statistics.median(rates)


def jaxslm_tokens_per_second(
    cfg: ModelConfig,
    batch: int,
    seq_len: int,
    steps: int,
    warmup: int,
    repeat: int,
    dtype: str,
    device: str,
) -> float:
    """Median tokens/s of jaxslm's jitted train step on one device, same recipe as the torch side.

    The step is jitted as jaxslm.training.trainer does it: state and batch shardings from
    jaxslm.training.placement on a one-device mesh, donated state, `jax.set_mesh`. `dtype` is
    the compute dtype (already in `cfg.dtype`); JAX picks `device` as its default backend.
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
    ones = np.ones((batch, seq_len), np.int32)
    host_batch = {
        "tokens": tokens.astype(np.int32),
        "targets": targets.astype(np.int32),
        "loss_mask": ones.astype(np.float32),
        "segment_ids": ones,
        "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch, seq_len)),
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
    return statistics.median(rates)


def device_kind(side: str, device: str) -> str:
    """The accelerator name as jax reports it (CUDA's device name for torch), or "cpu"."""
    if side == "torch":
        return torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return jax.devices()[0].device_kind


def mfu_text(rate: float, cfg: ModelConfig, seq_len: int, kind: str, dtype: str) -> str:
    """MFU of one device as a percentage, or why there is none."""
    peak = peak_flops_per_device(kind, dtype)
    if peak is not None:
        return f"{100 * mfu(rate, cfg, seq_len, peak):.1f}%"
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
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    cfg = model_config(args.shape, args.seq_len, dtype)
    measure = {"torch": torch_tokens_per_second, "jaxslm": jaxslm_tokens_per_second}
    sides = ["torch", "jaxslm"] if args.side == "both" else [args.side]

    rates, rows = {}, []
    for side in sides:
        print(f"measuring {side} ...", flush=True)
        rates[side] = measure[side](
            cfg, args.batch, args.seq_len, args.steps, args.warmup, args.repeat, dtype, device
        )
        if side == "torch" and device == "cuda":  # hand the memory back before JAX allocates
            gc.collect()
            torch.cuda.empty_cache()
        kind = device_kind(side, device)
        rows.append(
            (side, kind, rates[side], mfu_text(rates[side], cfg, args.seq_len, kind, dtype))
        )

    print(
        f"\nshape {args.shape} ({param_count(cfg) / 1e6:.1f}M params, {cfg.family}), batch "
        f"{args.batch} x seq {args.seq_len}, {dtype}, median of {args.repeat} x {args.steps} steps"
    )
    print("MFU: model FLOPs (train = 3 x forward, causal attention halved, real vocab) / peak")
    print(f"{'side':8s} {'device':24s} {'tokens/s':>12s} {'MFU':>14s}")
    for side, kind, rate, mfu_str in rows:
        print(f"{side:8s} {kind:24s} {rate:12,.0f} {mfu_str:>14s}")
    if len(rates) == 2:
        print(f"ratio jaxslm/torch: {rates['jaxslm'] / rates['torch']:.2f}x")


if __name__ == "__main__":
    from jaxslm.gpu_flags import add_gpu_flags

    add_gpu_flags()  # as `python -m jaxslm.train` does, before JAX starts its backend
    main()
