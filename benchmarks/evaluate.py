"""Scored pairs per second of jaxslm's log-likelihood scorer beside slamkit's evaluation loop.

Both sides score the same synthetic positive/negative pairs of token ids with the same
weights, in one invocation, and must agree before anything is timed.

  jaxslm  `jaxslm.load(ckpt).make_scorer(batch_tokens)`; every positive and negative of the
          task goes to one `Scorer.log_likelihood(..., normalize="mean")` call (identical
          sequences scored once; sequences sharing 16 or more leading tokens scored as one
          trunk with branches; all of it packed best-fit, longest first, into rows of bucketed
          lengths with segment ids; rows x length near `batch_tokens`; one jitted forward per
          batch; under --modality, only the allowed output rows computed when that is at most
          half the vocabulary), then pos > neg is counted on the host. Several --batch-tokens
          are timed; the table reports the fastest.
  torch   a re-implementation of slamkit's loop (slamkit/metric/modelling_metric.py,
          slamkit/model/unit_lm.py) over pre-tokenized pairs: a DataLoader of --batch-size
          pairs; per batch the positives are right-padded with the pad id into one tensor and
          scored by one forward, then the negatives likewise; log-likelihood = -(cross-entropy
          of logits[:, :-1] against tokens[:, 1:], float32, targets equal to the pad id
          masked), mean over the unmasked targets; with --modality the other modality's
          logits are set to -inf first. transformers Llama/Qwen2ForCausalLM, SDPA attention,
          eval mode, torch.inference_mode(), float32 on CPU (bfloat16 on CUDA).

Weights: a random transformers model of --shape is saved to a temporary directory and
imported with `jaxslm.hf.importer.import_hf` (500 speech units). The torch side loads that
same directory when the import kept the vocabulary (speech-only shapes), else jaxslm's
`export_hf` of the imported checkpoint (the interleaved qwen0.5b shape, whose 502 new rows
jaxslm samples). Before timing, the script prints the largest relative difference between
the two sides' log-likelihoods and how many pair decisions agree.

Data: random unit sequences shaped like the tasks (speech-only: `<S> units <S>`, as slamkit's
unit tokeniser; interleaved: BOS + units):
  swuggy       pos 10-40 units, neg within 3 units of it
  sblimp       pos 30-80 units, neg within 5 units of it
  sstorycloze  a 200-330 unit context + a 40-110 unit ending, the context drawn anew for each
               sequence (sStoryCloze at 25 Hz, deduplicated: 240-440 units per sequence; each
               spoken file is encoded whole, so the pair's contexts need not share units)
  xstorycloze  the same lengths, the context shared by both sequences of a pair (text
               StoryCloze and the cross-modal settings, whose context is tokenized on its own)
Default pair counts keep a CPU run to minutes, far below the real sets (sStoryCloze has
1,871 pairs): with few pairs, the Scorer's partly filled last batch of each bucket weighs more.
On a GPU every task gets at least 512 pairs (GPU_PAIRS), at every shape.

    python benchmarks/evaluate.py [--shape 20m|85m|qwen0.5b|tiny] [--task all|swuggy|...]
        [--pairs N] [--batch-size 8] [--batch-tokens 1024,2048,8192] [--repeat 3]
        [--dtype float32|bfloat16] [--modality speech|text] [--workdir DIR]
        [--compile-cache DIR] [--profile DIR] [--json PATH]

Timing: one untimed pass per side first (for jaxslm it compiles every bucket shape, after
jax.clear_caches() so that each batch_tokens pays its own compilation; the compile seconds
reported are JAX's trace + lower + backend-compile durations during that pass). With
--compile-cache DIR that first pass runs with an empty persistent compilation cache in DIR
(cold, as a first run of the CLI), then after jax.clear_caches() once more, its programs
loaded from DIR (warm, as every later run); both passes' seconds are reported. One more
untimed jaxslm pass follows to recompile what the later clears dropped;
then --repeat passes of each side, interleaved (torch, then each batch_tokens of jaxslm), so
a change of load on the shared machine hits both. Each rate is the median over the repeats
of pairs / seconds of one whole pass, host work included on both sides. The "paired" ratio
is the median over repeats of torch seconds / jaxslm seconds, passes run back to back, which
cancels slow changes of load.

Checks: the largest relative difference between the two sides' log-likelihoods, and the
share of pair decisions (pos > neg) that agree. In bfloat16 a float32 copy of the torch model
scores every task once more: both sides' bfloat16 log-likelihoods are compared with it (the
float32 reference) as well.

--profile DIR traces one jaxslm pass of each task (the fastest batch_tokens) with
jax.profiler into DIR/<task> and prints its device time per XLA op, per program and its
device<->host copies (benchmarks/device_profile.py). --json PATH writes the configuration and
every task's figures, rewritten after each task (a run cut short keeps what it measured).

What still differs:
- jaxslm pads the vocabulary to a multiple of 128 (502 -> 512) and masks the padding to -inf;
  its attention builds an explicit segment-causal mask and float32 scores where torch calls
  SDPA with is_causal.
- jaxslm masks padding by length; slamkit by `target == pad id`. The synthetic targets never
  hold the pad id (the BOS of the interleaved shape, equal to Qwen's pad, is never a target),
  so both count the same targets.
- slamkit's DataLoader uses 8 workers to read and tokenize audio; here the tokens are
  in memory, so the torch loop runs with num_workers=0 (workers would only add IPC).
- slamkit computes cross-entropy on logits of the model's dtype; here they are float32 on
  both sides (the same on CPU).

"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
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
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

import jaxslm
from jaxslm.backend import scorer_batch_tokens
from jaxslm.evals.scorer import Scorer, allowed_tokens
from jaxslm.evals.sharing import plan_items
from jaxslm.hf.exporter import export_hf
from jaxslm.hf.importer import import_hf
from jaxslm.model_dir import read_metadata
from jaxslm.models.presets import get_preset, hf_config_kwargs
from jaxslm.vocab import SpeechVocab

UNITS = 500
# jaxslm.models.presets: speech-only tiny, 20m and 85m (Cuervo & Marxer's Llamas), imported
# speech-only as they are (502 rows); the text LM Qwen2.5-0.5B, imported interleaved.
SHAPES = ("tiny", "20m", "85m", "qwen0.5b")
TASKS = {
    # (min units, max units, max |neg - pos| length difference); the cloze tasks are built apart
    "swuggy": (10, 40, 3),
    "sblimp": (30, 80, 5),
    "sstorycloze": None,
    "xstorycloze": None,
}
DEFAULT_PAIRS = {"swuggy": 256, "sblimp": 192, "sstorycloze": 48, "xstorycloze": 48}
PAIRS_DIVISOR = {"tiny": 1, "20m": 1, "85m": 4, "qwen0.5b": 16}  # keep CPU runs to minutes
GPU_PAIRS = 512  # at least this many pairs per task on a GPU: enough batches to measure
STORY_PREFIX, STORY_ENDING = (200, 330), (40, 110)


# ----------------------------------------------------------------------------- model


@dataclasses.dataclass
class Model:
    ckpt: Path
    torch_dir: Path
    vocab: SpeechVocab


def build_model(shape: str, work: Path) -> Model:
    """A random HF model of `shape` in work/hf, imported by jaxslm into work/ckpt."""
    preset = get_preset(shape)
    mode = "speech-only" if preset.speech_only else "interleaved"
    config = hf_config(shape)
    hf_dir, ckpt = work / "hf", work / "ckpt"
    if not ckpt.exists():
        print(f"building a random {shape} {config.model_type} in {hf_dir} ...", flush=True)
        params = save_random_hf(config, hf_dir)
        if not preset.speech_only:
            save_word_tokenizer(preset.tokenizer_size, preset.eos_id, hf_dir)
        print(f"  {params / 1e6:.1f}M parameters; importing with jaxslm ...", flush=True)
        import_hf(hf_dir, ckpt, speech_units=UNITS, mode=mode)
    vocab = read_metadata(ckpt)[1]
    torch_dir = hf_dir
    if vocab.size != config.vocab_size:  # new rows sampled by jaxslm: torch reads its export
        torch_dir = work / "export"
        if not torch_dir.exists():
            print("  exporting the imported checkpoint for transformers ...", flush=True)
            export_hf(ckpt, torch_dir)
    return Model(ckpt, torch_dir, vocab)


def hf_config(shape: str):
    """The transformers config of preset `shape`: the speech-only model of UNITS units, or the
    text LM with its special ids."""
    from transformers import AutoConfig

    units = UNITS if get_preset(shape).speech_only else None
    keys = hf_config_kwargs(shape, units, max_position_embeddings=4096)
    return AutoConfig.for_model(**keys, use_cache=False)


def save_random_hf(config, out: Path) -> int:
    """Save a transformers model of `config` with random weights that make the logits vary
    (std ~1); returns its parameter count."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in name:
                param.copy_(1 + 0.1 * noise)
            elif param.ndim == 1:  # Qwen's q/k/v biases
                param.copy_(0.1 * noise)
            else:  # [out, in] and [vocab, embed]: unit-scale outputs for unit-RMS inputs
                param.copy_(noise / param.shape[-1] ** 0.5)
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def save_word_tokenizer(size: int, eos_id: int, out: Path) -> None:
    """A `size`-entry word-level tokenizer (w0, w1, ...) whose EOS is w{eos_id}."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(size)}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    eos = f"w{eos_id}"
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos, pad_token=eos)
    fast.save_pretrained(out)


def load_torch(directory: Path, dtype: str, device: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        directory, dtype=getattr(torch, dtype), attn_implementation="sdpa"
    )
    return model.to(device).eval()


# ----------------------------------------------------------------------------- data


def make_pairs(task: str, count: int, vocab: SpeechVocab, seed: int = 0) -> list[tuple]:
    """`count` (positive, negative) token-id lists shaped like `task`."""
    rng = np.random.default_rng(seed)

    def units(n: int) -> list[int]:
        return vocab.units_to_ids(rng.integers(0, vocab.num_units, n)).tolist()

    if vocab.mode == "speech-only":
        first, last = [vocab.bos_id], [vocab.eos_ids[0]]
    else:  # interleaved: the text tokenizer's BOS (Qwen's is its EOS/pad), no end marker
        first, last = [vocab.bos_id if vocab.bos_id is not None else vocab.eos_ids[0]], []
    pairs = []
    for _ in range(count):
        if task.endswith("storycloze"):
            size = int(rng.integers(*STORY_PREFIX, endpoint=True))
            shared = units(size)
            pair = []
            for _ in range(2):
                context = shared if task == "xstorycloze" else units(size)
                ending = units(int(rng.integers(*STORY_ENDING, endpoint=True)))
                pair.append(first + context + ending + last)
            pairs.append(tuple(pair))
            continue
        low, high, spread = TASKS[task]
        n = int(rng.integers(low, high, endpoint=True))
        m = int(np.clip(n + rng.integers(-spread, spread, endpoint=True), low, high))
        pairs.append((first + units(n) + last, first + units(m) + last))
    return pairs


# ----------------------------------------------------------------------------- torch side


class PairDataset(Dataset):
    """Pre-tokenized pairs, as slamkit's ModellingMetricDataset yields decoded audio pairs."""

    def __init__(self, pairs: list[tuple]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        pos, neg = self.pairs[index]
        return torch.tensor(pos), torch.tensor(neg)


class SlamkitLoop:
    """slamkit's modelling_metric loop + UnitLM.log_likelihood on token ids."""

    def __init__(self, model, vocab: SpeechVocab, pad_id: int, modality, batch_size, device):
        self.model, self.pad_id, self.batch_size, self.device = model, pad_id, batch_size, device
        self.ignore = None
        if modality is not None:
            banned = ~allowed_tokens(vocab, modality, vocab.size)
            self.ignore = torch.as_tensor(np.flatnonzero(banned), device=device)

    def collate(self, batch):
        pos, neg = zip(*batch, strict=True)
        pad = self.pad_id
        return (
            pad_sequence(pos, batch_first=True, padding_value=pad),
            pad_sequence(neg, batch_first=True, padding_value=pad),
        )

    def log_likelihood(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=tokens).logits.float()
        if self.ignore is not None:
            logits[:, :, self.ignore] = float("-inf")
        targets = tokens[:, 1:].clone()
        targets[targets == self.pad_id] = -100
        mask = targets.ne(-100)
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
        ).view(targets.shape)
        return -((losses * mask).sum(-1) / mask.sum(-1))

    def __call__(self, pairs: list[tuple]) -> tuple[np.ndarray, np.ndarray, float]:
        """(LL of positives, LL of negatives, accuracy)."""
        loader = DataLoader(
            PairDataset(pairs), batch_size=self.batch_size, collate_fn=self.collate, num_workers=0
        )
        pos_ll, neg_ll, results = [], [], []
        with torch.inference_mode():
            for pos, neg in loader:
                pos, neg = pos.to(self.device), neg.to(self.device)
                p, n = self.log_likelihood(pos), self.log_likelihood(neg)
                result = torch.zeros_like(p)
                result[p > n] = 1
                result[p == n] = 0.5
                results.append(result)
                pos_ll.append(p)
                neg_ll.append(n)
            accuracy = torch.cat(results).float().mean().item()
        return (
            torch.cat(pos_ll).double().cpu().numpy(),
            torch.cat(neg_ll).double().cpu().numpy(),
            accuracy,
        )


# ----------------------------------------------------------------------------- jaxslm side


class JaxslmPass:
    """One pass of jaxslm's Scorer over every positive and negative, then pos > neg."""

    def __init__(self, scorer: Scorer, modality):
        self.scorer, self.modality = scorer, modality
        self.jit = scorer._score

    def __call__(self, pairs: list[tuple]) -> tuple[np.ndarray, np.ndarray, float]:
        sequences = [s for pair in pairs for s in pair]
        ll = self.scorer.log_likelihood(sequences, normalize="mean", modality=self.modality)
        return pair_results(ll)

    def stats(self, pairs: list[tuple]) -> tuple[int, int]:
        """(calls, tokens the padded calls hold) of one pass, as Scorer._run sizes them."""
        scorer = self.scorer
        items, _ = plan_items([np.asarray(s, np.int32) for pair in pairs for s in pair])
        batches = scorer._batches(np.asarray([item.size for item in items]))
        held = 0
        for length, rows in batches:
            held += scorer._padded_rows(len(rows), length) * length
        return len(batches), held


def pair_results(ll: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(LL of positives, LL of negatives, accuracy) from interleaved pos/neg LLs."""
    pos, neg = ll[0::2], ll[1::2]
    accuracy = float(np.mean(np.where(pos > neg, 1.0, np.where(pos == neg, 0.5, 0.0))))
    return pos, neg, accuracy


# ----------------------------------------------------------------------------- timing


def timed(run: Callable, pairs: list[tuple]) -> tuple[float, tuple]:
    start = time.perf_counter()
    out = run(pairs)
    return time.perf_counter() - start, out


def torch_padding(pairs: list[tuple], batch_size: int) -> int:
    """Tokens the torch loop's padded tensors hold in one pass."""
    held = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        for side in range(2):
            held += len(chunk) * max(len(p[side]) for p in chunk)
    return held


def rate_text(pairs_per_second: float) -> str:
    """A rate with one decimal, or three significant digits below 10."""
    return f"{pairs_per_second:,.1f}" if pairs_per_second >= 10 else f"{pairs_per_second:.3g}"


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def default_pairs(task: str, shape: str, on_gpu: bool) -> int:
    """Pairs per task: the CPU counts (DEFAULT_PAIRS / PAIRS_DIVISOR), at least GPU_PAIRS on a
    GPU."""
    if on_gpu:
        return max(GPU_PAIRS, DEFAULT_PAIRS[task])
    return max(2, DEFAULT_PAIRS[task] // PAIRS_DIVISOR[shape])


def decisions_agree(ours: tuple, theirs: tuple) -> float:
    """Share of pairs whose decision (pos > neg) is the same on both sides."""
    return float(np.mean((ours[0] > ours[1]) == (theirs[0] > theirs[1])))


def run_task(task: str, args, model: Model, lm, loop, reference_loop, clock) -> dict:
    count = args.pairs or default_pairs(task, args.shape, args.on_gpu)
    pairs = make_pairs(task, count, model.vocab)
    lengths = [len(s) for pair in pairs for s in pair]
    print(
        f"\n[{task}] {len(pairs)} pairs, {min(lengths)}-{max(lengths)} tokens per sequence, "
        f"{sum(lengths):,} tokens in all (load average {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    runs: dict[str, Callable] = {"torch": loop}
    for tokens in args.batch_tokens:
        runs[f"jaxslm bt={tokens}"] = JaxslmPass(lm.make_scorer(tokens), args.modality)

    first, compile_s, programs, outputs, warm = {}, {}, {}, {}, {}
    for name, run in runs.items():
        cache = None
        if name != "torch":  # jit caches are per function, shared by every Scorer
            jax.clear_caches()
            if args.compile_cache:
                cache = fresh_compile_cache(args.compile_cache / task / name.split("=")[1])
        clock.take()
        first[name], outputs[name] = timed(run, pairs)
        compile_s[name] = clock.take()[0]
        if name != "torch":
            programs[name] = run.jit._cache_size()
        if cache is not None:
            jax.clear_caches()
            warm[name] = timed(run, pairs)[0]
            print(
                f"  {name}: first pass {first[name]:.2f} s with an empty compilation cache, "
                f"{warm[name]:.2f} s with its {cache_entries(cache)} stored programs",
                flush=True,
            )
    reference = outputs["torch"]
    float32 = reference_loop(pairs) if reference_loop is not None else None
    agreement = {}
    for name, out in outputs.items():
        if name == "torch":
            continue
        ours = np.concatenate(out[:2])
        agreement[name] = (
            relative_difference(ours, np.concatenate(reference[:2])),
            decisions_agree(out, reference),
        )
        print(
            f"  {name}: max relative LL difference to torch {agreement[name][0]:.1e}, "
            f"pair decisions agree {100 * agreement[name][1]:.1f}%, accuracy {out[2]:.3f} "
            f"(torch {reference[2]:.3f})"
        )
    to_float32 = {}
    if float32 is not None:
        reference32 = np.concatenate(float32[:2])
        for name, out in outputs.items():
            difference = relative_difference(np.concatenate(out[:2]), reference32)
            to_float32[name] = (difference, decisions_agree(out, float32))
            print(
                f"  {name} ({args.dtype}) against torch float32: max relative LL difference "
                f"{difference:.1e}, pair decisions agree {100 * to_float32[name][1]:.1f}%"
            )

    for name, run in runs.items():  # compile again what a later clear_caches() dropped
        if name != "torch":
            run(pairs)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, run in runs.items():
            seconds[name].append(timed(run, pairs)[0])
    rates = {name: len(pairs) / statistics.median(s) for name, s in seconds.items()}
    for name in runs:
        per_run = ", ".join(rate_text(len(pairs) / s) for s in seconds[name])
        line = f"  {name:30s} first pass {first[name]:6.2f} s"
        if name != "torch":
            batches, held = runs[name].stats(pairs)
            line += (
                f" (compile {compile_s[name]:5.2f} s, {programs[name]} programs), {batches} calls"
            )
        else:
            held = torch_padding(pairs, args.batch_size)
        line += f", {held / sum(lengths):.2f}x tokens held/real"
        print(f"{line}; pairs/s per repeat: {per_run}", flush=True)
    print(f"  load average after the task: {os.getloadavg()[0]:.2f}")
    best = max((n for n in runs if n.startswith("jaxslm")), key=rates.get)
    paired = statistics.median(t / j for t, j in zip(seconds["torch"], seconds[best], strict=True))
    profile = None
    if args.profile:
        profile = trace_call(lambda: runs[best](pairs), args.profile / task)
        print_trace(f"one jaxslm pass of {task} ({best})", profile)
    steady = statistics.median(seconds[best])
    return dict(
        paired=paired,
        task=task,
        pairs=len(pairs),
        tokens=sum(lengths),
        torch=rates["torch"],
        jaxslm=rates[best],
        best=best.split("=")[1],
        rates=rates,
        compile=compile_s[best],
        first_pass_s=first[best],
        warm_first_pass_s=warm.get(best),
        steady_pass_s=steady,
        programs=programs[best],
        agreement=agreement[best],
        float32_torch=to_float32.get("torch"),
        float32_jaxslm=to_float32.get(best),
        profile=profile,
    )


def write_json(path: Path, args, rows: list[dict], setup: dict) -> None:
    """The configuration and the tasks measured so far, as JSON at `path`."""
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config.pop("json", None)
    path.write_text(json.dumps({"config": config, **setup, "results": rows}, indent=1))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=SHAPES, default="20m", help="model shape (default 20m)")
    parser.add_argument(
        "--task",
        default="all",
        help=f"synthetic tasks to score, comma-separated, of {','.join(TASKS)} (default: all, "
        "one after another)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="pairs per task (default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_PAIRS.items())
        + f" for tiny and 20m; a quarter of that for 85m, a sixteenth for qwen0.5b; at least "
        f"{GPU_PAIRS} for every shape on a GPU)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="torch side: pairs per DataLoader batch (8)"
    )
    parser.add_argument(
        "--batch-tokens",
        default=None,
        help="jaxslm side: comma-separated Scorer batch_tokens values to time; the table "
        "reports the fastest (default: half, once and four times the Scorer's default for the "
        "backend, i.e. 1024,2048,8192 on CPU)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per side (median)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="compute dtype of both sides (default: bfloat16 on CUDA, float32 on CPU)",
    )
    parser.add_argument(
        "--modality",
        choices=["speech", "text"],
        default=None,
        help="score with the other modality's logits set to -inf (slamkit's "
        "used_token_modality; default none, as slamkit's metric configs)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="where the random HF model and jaxslm checkpoint go; reused when present "
        "(default: a fresh temporary directory)",
    )
    add_device_options(parser, "jaxslm's first pass", "one jaxslm pass per task (DIR/<task>)")
    args = parser.parse_args()
    args.task = list(TASKS) if args.task == "all" else args.task.split(",")
    unknown = [t for t in args.task if t not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    if args.batch_tokens is None:
        default = scorer_batch_tokens()
        args.batch_tokens = [default // 2, default, 4 * default]
    else:
        args.batch_tokens = [int(t) for t in args.batch_tokens.split(",")]
    return args


def main() -> None:
    args = parse_args()
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    args.on_gpu = jax.default_backend() == "gpu"
    work = Path(args.workdir or tempfile.mkdtemp(prefix="jaxslm-bench-eval-")) / args.shape
    work.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    model = build_model(args.shape, work)
    built = time.perf_counter() - start
    lm = jaxslm.load(model.ckpt, compute_dtype=dtype)
    vocab = model.vocab
    pad_id = vocab.pad_id if vocab.pad_id is not None else vocab.eos_ids[0]
    torch_model = load_torch(model.torch_dir, dtype, device)
    loop = SlamkitLoop(torch_model, vocab, pad_id, args.modality, args.batch_size, device)
    reference_loop = None
    if dtype != "float32":
        reference = load_torch(model.torch_dir, "float32", device)
        reference_loop = SlamkitLoop(reference, vocab, pad_id, args.modality, 64, device)
    backend = jax.default_backend()
    params = sum(p.numel() for p in torch_model.parameters())
    where = f"jaxslm on {backend} ({jax.devices()[0].device_kind}), torch on {device}"
    print(
        f"shape {args.shape}: {params / 1e6:.1f}M parameters, {vocab.mode} vocabulary of "
        f"{vocab.size} (jaxslm pads to {lm.config.padded_vocab_size}), {dtype}\n"
        f"{where} ({torch.get_num_threads()} threads); jaxslm batch_tokens {args.batch_tokens}, "
        f"torch batch size {args.batch_size} pairs; model built or reused in {built:.1f} s",
        flush=True,
    )
    setup = dict(
        where=where,
        parameters=params,
        jax=jax.__version__,
        torch=torch.__version__,
        device_kind=jax.devices()[0].device_kind,
        build_s=built,
    )
    clock = CompileClock()
    rows = []
    for task in args.task:
        rows.append(run_task(task, args, model, lm, loop, reference_loop, clock))
        if args.json:
            write_json(args.json, args, rows, setup)
    gc.collect()
    print_table(rows, args, backend, device)


def print_table(rows: list[dict], args, backend: str, device: str) -> None:
    print(
        f"\nscored pairs/s, median of {args.repeat} passes; jaxslm on {backend}, torch on "
        f"{device}, {args.dtype}"
    )
    header = (
        f"{'task':11s} {'shape':8s} {'pairs':>5s} {'jaxslm':>9s} {'bt':>5s} {'torch':>9s} "
        f"{'ratio':>6s} {'paired':>6s} {'compile':>8s} {'cold/warm':>11s} {'max rel diff':>12s} "
        f"{'agree':>6s}"
    )
    print(header)
    for r in rows:
        warm = r["warm_first_pass_s"]
        first = f"{r['first_pass_s']:.1f}/{warm:.1f}s" if warm is not None else "-"
        print(
            f"{r['task']:11s} {args.shape:8s} {r['pairs']:5d} {rate_text(r['jaxslm']):>9s} "
            f"{r['best']:>5s} {rate_text(r['torch']):>9s} {r['jaxslm'] / r['torch']:5.2f}x "
            f"{r['paired']:5.2f}x "
            f"{r['compile']:7.1f}s {first:>11s} "
            f"{r['agreement'][0]:12.1e} {100 * r['agreement'][1]:5.1f}%"
        )
    print(
        "(bt: the fastest jaxslm batch_tokens; ratio: of the medians; paired: median over the "
        "repeats of torch seconds / jaxslm seconds of back-to-back passes; compile: the first "
        "pass's JAX compile seconds; cold/warm: jaxslm's first pass with an empty and a filled "
        "persistent compilation cache, with --compile-cache)"
    )
    for r in rows:
        others = ", ".join(f"{n}: {rate_text(v)}" for n, v in r["rates"].items() if n != "torch")
        print(f"  {r['task']}: {others}")
        for side in ("jaxslm", "torch"):
            if r[f"float32_{side}"] is not None:
                difference, same = r[f"float32_{side}"]
                print(
                    f"    {side} {args.dtype} against torch float32: max relative LL difference "
                    f"{difference:.1e}, decisions agree {100 * same:.1f}%"
                )


if __name__ == "__main__":
    main()
