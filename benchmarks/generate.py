"""Decoded tokens per second of jaxslm's `SpeechLM.generate` beside transformers' `generate`.

Both sides continue the same prompts with the same weights:

  model    a random HF Llama with Cuervo & Marxer's speech-only vocabulary (502 ids: `<PAD>`,
           `<S>`, 500 units), saved to a temporary folder. transformers loads it with
           `from_pretrained`; jaxslm imports it with `import_hf(..., mode="speech-only")`
           (502 rows kept as they are) and loads the checkpoint with `jaxslm.load`.
  prompts  `<S>` + --prompt-units random units (75 = 3 s at 25 Hz), the same length in every
           row, so transformers needs no padding and jaxslm no ragged prompts.
  jaxslm   `SpeechLM.generate`: one jitted prefill over the prompts padded to a power of two
           (>= 16), then a jitted `while_loop` of single-token steps over a preallocated KV
           cache of round_up(prompt bucket + max_new_tokens, 64) slots. Compiled once per
           bucket (rows, prompt bucket, cache length, budget, sampling settings); the warm-up
           call's tracing + lowering + XLA compile time (jax.monitoring's compile events) is
           reported as "compile".
  HF       `model.generate(use_cache=True)` (DynamicCache), eval mode, `torch.inference_mode`,
           --dtype, SDPA attention, on CUDA when torch sees a GPU, else CPU.

Modes: greedy, and sampling at temperature 0.8 with top-k 25 (slamkit's defaults; no top-p).

--shape qwen0.5b is the interleaved Qwen2.5-0.5B shape of benchmarks/evaluate.py (a random
HF Qwen2 with a 151,665-entry word tokenizer, imported with 500 new unit rows, which
transformers reads from jaxslm's export); its prompts are the tokenizer's BOS + units.
--modality speech bans the text tokens and markers on both sides, as slamkit generates speech:
jaxslm's `generate(modality="speech")` (which then computes only the ~500 kept rows of the
output projection), transformers' `suppress_tokens` (their logits set to -inf).

Counting tokens fairly: neither side is given an EOS id. The benchmark's jaxslm `SpeechLM`
carries the imported vocabulary with `eos_ids=()` (same weights, same ids), and transformers'
generation config gets `eos_token_id=None`. `<S>` stays an ordinary token that either side
may emit (nothing is banned, so both sample from the same distribution), and no row stops
early: every row decodes exactly --max-new-tokens tokens on both sides (checked).
tokens/s = rows x max_new_tokens / wall time of one `generate` call, prefill included (the
prompt tokens are not counted). Each figure is the median of --repeat calls after one
untimed warm-up call per side and setting; the two sides alternate call by call.

Greedy outputs are compared token for token before timing: "agreement" is the fraction of
rows whose max_new_tokens ids are identical on both sides (float32 on both; a near-tie that
flips one argmax changes the rest of that row). Sampled outputs cannot agree (different
random generators) and show "-".

What still differs: jaxslm pads the vocabulary to 512 (LM head computes 10 padding columns,
masked to -inf), pads the prompt to the bucket and attends over the whole preallocated
cache with a mask at every step; transformers grows its cache one slot per step and runs a
Python loop with its logits processors around each forward.

Compilation: with --compile-cache DIR, each (batch, mode)'s warm-up call runs after
jax.clear_caches() with an empty persistent compilation cache in DIR/<batch>-<mode> (cold, as
a first run of the CLI), then once more after jax.clear_caches(), its program loaded from that
folder (warm, as every later run); both calls' seconds are reported. --profile DIR traces one
more jaxslm call per (batch, mode) with jax.profiler and prints its device time per op and
its device<->host copies (on a GPU, a `while_loop` whose trip count XLA does not know, such
as the decoding loop that stops at EOS, copies its predicate to the host every step).

dtype: float32 by default on both sides (greedy outputs must then agree). --dtype bfloat16
loads jaxslm with bfloat16 compute and transformers in bfloat16 (the GPU speed figures);
greedy agreement then measures bf16 rounding as well. Default batches: 1 and 16 on a CPU,
1, 16 and 64 on a GPU. --json PATH writes the configuration and every row.

    python benchmarks/generate.py [--shape tiny|20m|85m|qwen0.5b] [--batch 1 16 64]
        [--modes greedy sample] [--max-new-tokens 150] [--prompt-units 75] [--repeat 3]
        [--modality speech] [--dtype float32|bfloat16] [--compile-cache DIR] [--profile DIR]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch
from compile_clock import CompileClock
from device_profile import (
    add_device_options,
    cache_entries,
    fresh_compile_cache,
    print_trace,
    trace_call,
)
from evaluate import build_model
from transformers import AutoConfig, AutoModelForCausalLM

import jaxslm
from jaxslm.api import SpeechLM
from jaxslm.hf.importer import import_hf
from jaxslm.models.presets import get_preset, hf_config_kwargs
from jaxslm.vocab import SpeechVocab, allowed_tokens

UNITS = 500  # speech-only vocabulary: <PAD> = 0, <S> = 1 (BOS and EOS), units 2..501
# jaxslm.models.presets: speech-only tiny, 20m and 85m (Cuervo & Marxer's Llamas); qwen0.5b is
# benchmarks/evaluate.py's interleaved Qwen2.5-0.5B.
SHAPES = ("tiny", "20m", "85m", "qwen0.5b")
MODES = {
    "greedy": dict(temperature=0.0, top_k=None),
    "sample": dict(temperature=0.8, top_k=25),
}


def save_hf_model(shape: str, directory: Path, seed: int) -> None:
    """A randomly initialised HF Llama of the speech-only preset `shape` (vocabulary 502,
    float32) in `directory`."""
    # initializer_range 0.05 rather than HF's 0.02: at 0.02 the random 20m model's greedy
    # continuations collapse onto one or two repeated units (logit std 0.45), which would make
    # the greedy agreement check trivial; at 0.05 (logit std 1.1) rows hold about 50 distinct
    # units in 60 tokens.
    config = AutoConfig.for_model(**hf_config_kwargs(shape, UNITS, initializer_range=0.05))
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(directory)


def load_sides(
    shape: str, work: Path, seed: int, device: str, dtype: str
) -> tuple[SpeechLM, object, int]:
    """(jaxslm model without EOS ids, transformers model without EOS id, BOS id) of the same
    weights; the BOS is the vocabulary's, or its first EOS where it has none (Qwen)."""
    if get_preset(shape).speech_only:
        hf_dir, ckpt_dir = work / "hf", work / "ckpt"
        save_hf_model(shape, hf_dir, seed)
        import_hf(hf_dir, ckpt_dir, speech_units=UNITS, mode="speech-only")
    else:
        built = build_model(shape, work)
        hf_dir, ckpt_dir = built.torch_dir, built.ckpt
    loaded = jaxslm.load(ckpt_dir, compute_dtype=dtype)
    bos = loaded.vocab.bos_id if loaded.vocab.bos_id is not None else loaded.vocab.eos_ids[0]
    ours = SpeechLM(loaded.model, dataclasses.replace(loaded.vocab, eos_ids=()), loaded.mesh)
    theirs = AutoModelForCausalLM.from_pretrained(
        hf_dir, attn_implementation="sdpa", dtype=getattr(torch, dtype)
    )
    theirs = theirs.to(device).eval()
    theirs.generation_config.eos_token_id = None
    theirs.generation_config.pad_token_id = 0
    return ours, theirs, bos


def make_prompts(vocab: SpeechVocab, bos: int, batch: int, units: int, seed: int) -> np.ndarray:
    """[batch, 1 + units] prompts: `bos` then random units."""
    ids = vocab.units_to_ids(np.random.default_rng(seed).integers(0, UNITS, (batch, units)))
    return np.concatenate([np.full((batch, 1), bos), ids], axis=1)


def jaxslm_generate(lm: SpeechLM, prompts: np.ndarray, new: int, mode: str, seed: int, modality):
    """(seconds, generated ids [rows, new]) of one `SpeechLM.generate` call."""
    start = time.perf_counter()
    out = lm.generate(prompts.tolist(), new, seed=seed, modality=modality, **MODES[mode])
    seconds = time.perf_counter() - start
    return seconds, np.asarray(out)


def hf_generate(model, prompts: np.ndarray, new: int, mode: str, seed: int, device: str, banned):
    """(seconds, generated ids [rows, new]) of one transformers `generate` call."""
    settings = MODES[mode]
    sampling = (
        dict(do_sample=True, temperature=settings["temperature"], top_k=settings["top_k"])
        if settings["temperature"] > 0
        else dict(do_sample=False)
    )
    torch.manual_seed(seed)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        tokens = torch.from_numpy(prompts).to(device)
        out = model.generate(
            tokens,
            attention_mask=torch.ones_like(tokens),
            max_new_tokens=new,
            use_cache=True,
            eos_token_id=None,
            pad_token_id=0,
            suppress_tokens=banned,
            **sampling,
        )
        out = out[:, prompts.shape[1] :].cpu()
    seconds = time.perf_counter() - start
    return seconds, out.numpy()


def check_lengths(side: str, out: np.ndarray, rows: int, new: int) -> None:
    if out.shape != (rows, new):
        raise SystemExit(f"{side} decoded {out.shape} tokens, expected ({rows}, {new})")


def measure(
    lm, model, prompts, new: int, mode: str, args, device: str, clock: CompileClock
) -> dict:
    """Rates, compile time and greedy agreement of both sides for one (batch, mode)."""
    rows, repeat, modality = prompts.shape[0], args.repeat, args.modality
    banned = None
    if modality is not None:
        banned = np.flatnonzero(~allowed_tokens(lm.vocab, modality, lm.vocab.size)).tolist()
    cold = warm = None
    if args.compile_cache:
        jax.clear_caches()
        cache = fresh_compile_cache(args.compile_cache / f"{rows}-{mode}")
    clock.take()
    first, ours = jaxslm_generate(lm, prompts, new, mode, 0, modality)
    compile_seconds = clock.take()[0]
    if args.compile_cache:
        jax.clear_caches()
        cold, warm = first, jaxslm_generate(lm, prompts, new, mode, 0, modality)[0]
        print(
            f"  first call {cold:.2f} s with an empty compilation cache, {warm:.2f} s with its "
            f"{cache_entries(cache)} stored programs",
            flush=True,
        )
    _, theirs = hf_generate(model, prompts, new, mode, 0, device, banned)
    check_lengths("jaxslm", ours, rows, new)
    check_lengths("transformers", theirs, rows, new)
    agreement = None
    if MODES[mode]["temperature"] == 0:
        agreement = float(np.mean(np.all(ours == theirs, axis=1)))
    times: dict[str, list[float]] = {"jaxslm": [], "hf": []}
    for r in range(repeat):
        times["jaxslm"].append(jaxslm_generate(lm, prompts, new, mode, r + 1, modality)[0])
        times["hf"].append(hf_generate(model, prompts, new, mode, r + 1, device, banned)[0])
    median = {side: statistics.median(t) for side, t in times.items()}
    profile = None
    if args.profile:
        profile = trace_call(
            lambda: jaxslm_generate(lm, prompts, new, mode, 0, modality),
            args.profile / f"{rows}-{mode}",
        )
        print_trace(f"one jaxslm call, batch {rows} {mode}", profile)
    return {
        "jaxslm": rows * new / median["jaxslm"],
        "hf": rows * new / median["hf"],
        "jaxslm_s": median["jaxslm"],
        "hf_s": median["hf"],
        "compile": compile_seconds,
        "first_call_s": first,
        "cold_first_call_s": cold,
        "warm_first_call_s": warm,
        "agreement": agreement,
        "profile": profile,
    }


def device_names(device: str) -> str:
    """Where each side ran, in words ("CPU", or the GPU names)."""
    ours = jax.devices()[0]
    ours_name = "CPU" if ours.platform == "cpu" else f"GPU ({ours.device_kind})"
    theirs = "CPU" if device == "cpu" else f"GPU ({torch.cuda.get_device_name()})"
    return ours_name if ours_name == theirs else f"jaxslm {ours_name}, HF {theirs}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=SHAPES, default="20m", help="model shape (default 20m)")
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=None,
        help="rows per generate call (list; default 1 16 on a CPU, 1 16 64 on a GPU)",
    )
    parser.add_argument(
        "--modes", choices=MODES, nargs="+", default=list(MODES), help="decoding modes"
    )
    parser.add_argument("--max-new-tokens", type=int, default=150, help="tokens per row")
    parser.add_argument("--prompt-units", type=int, default=75, help="units after <S> per prompt")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per figure (median)")
    parser.add_argument("--seed", type=int, default=0, help="weights and prompts")
    parser.add_argument(
        "--modality",
        choices=["speech"],
        default=None,
        help="ban the other modality's tokens on both sides (default: nothing banned)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="both sides' parameters and compute (default float32)",
    )
    add_device_options(parser, "each warm-up call", "one jaxslm call per (batch, mode)")
    args = parser.parse_args()
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch
    if args.batch is None:
        args.batch = [1, 16, 64] if jax.default_backend() == "gpu" else [1, 16]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    clock = CompileClock()
    where = device_names(device)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        lm, model, bos = load_sides(args.shape, Path(tmp), args.seed, device, args.dtype)
        params = sum(p.numel() for p in model.parameters())
        for batch in args.batch:
            prompts = make_prompts(lm.vocab, bos, batch, args.prompt_units, args.seed + batch)
            for mode in args.modes:
                print(f"measuring batch {batch} {mode} ...", flush=True)
                result = measure(lm, model, prompts, args.max_new_tokens, mode, args, device, clock)
                results.append((batch, mode, result))
                if args.json:
                    write_json(args, where, params, results)

    print(
        f"\nshape {args.shape} ({params / 1e6:.1f}M params, {lm.vocab.mode} vocab "
        f"{lm.vocab.size}, banned: {args.modality and 'all but ' + args.modality}), prompt "
        f"1 + {args.prompt_units} tokens, {args.max_new_tokens} new tokens per row, {args.dtype}, "
        f"median of {args.repeat} calls; tok/s = rows x new tokens / wall time (prefill included); "
        f"torch threads {torch.get_num_threads()}, jax {jax.__version__} on {jax.default_backend()}"
    )
    header = (
        f"{'shape':6s} {'batch':>5s} {'mode':7s} {'jaxslm tok/s':>13s} {'HF tok/s':>10s} "
        f"{'ratio':>6s} {'agreement':>9s} {'jaxslm s':>9s} {'HF s':>7s} {'compile s':>9s} "
        f"{'cold/warm s':>11s}  device"
    )
    print(header)
    for batch, mode, r in results:
        agreement = "-" if r["agreement"] is None else f"{r['agreement']:.0%}"
        cold = r["cold_first_call_s"]
        first = "-" if cold is None else f"{cold:.1f}/{r['warm_first_call_s']:.1f}"
        print(
            f"{args.shape:6s} {batch:5d} {mode:7s} {r['jaxslm']:13,.0f} {r['hf']:10,.0f} "
            f"{r['jaxslm'] / r['hf']:5.2f}x {agreement:>9s} {r['jaxslm_s']:9.3f} "
            f"{r['hf_s']:7.3f} {r['compile']:9.2f} {first:>11s}  {where}"
        )
    print(
        "ratio = jaxslm tok/s / HF tok/s; compile = jaxslm's tracing + lowering + XLA compile "
        "in its warm-up call (jax.monitoring), excluded from the timed calls; cold/warm: that "
        "call's seconds with an empty and a filled persistent compilation cache (--compile-cache)"
    )


def write_json(args, where: str, params: int, results: list) -> None:
    """The configuration and the rows measured so far, as JSON at args.json."""
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    rows = [dict(batch=batch, mode=mode, **r) for batch, mode, r in results]
    info = dict(where=where, parameters=params, jax=jax.__version__, torch=torch.__version__)
    args.json.write_text(json.dumps({"config": config, **info, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
