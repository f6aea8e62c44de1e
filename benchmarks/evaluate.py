"""Scored pairs per second of jaxslm's log-likelihood scorer beside slamkit's evaluation loop.

Both sides score the same synthetic positive/negative pairs of token ids with the same
weights, in one invocation, and must agree before anything is timed.

  jaxslm  `jaxslm.load(ckpt).make_scorer(batch_tokens)`; every positive and negative of the
          task goes to one `Scorer.log_likelihood(..., normalize="mean")` call (sequences
          packed best-fit, longest first, into rows of bucketed lengths with segment ids; rows x
          length near `batch_tokens`; one jitted forward per batch), then pos > neg is
          counted on the host. Several --batch-tokens are timed; the table reports the
          fastest.
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
  swuggy      pos 10-40 units, neg within 3 units of it
  sblimp      pos 30-80 units, neg within 5 units of it
  storycloze  a shared 200-330 unit prefix + two 40-110 unit endings (sStoryCloze at 25 Hz,
              deduplicated: 240-440 units per sequence)
Default pair counts keep a CPU run to minutes, far below the real sets (sStoryCloze has
1,871 pairs): with few pairs, the Scorer's partly filled last batch of each bucket weighs more.

    python benchmarks/evaluate.py [--shape 20m|85m|qwen0.5b|tiny] [--task all|swuggy|...]
        [--pairs N] [--batch-size 8] [--batch-tokens 1024,2048,8192] [--repeat 3]
        [--dtype float32|bfloat16] [--modality speech|text] [--workdir DIR]
        [--prototype [--pack-length L,...] [--pack-tokens 2048]]

Timing: one untimed pass per side first (for jaxslm it compiles every bucket shape, after
jax.clear_caches() so that each batch_tokens pays its own compilation; the compile seconds
reported are JAX's trace + lower + backend-compile durations during that pass, and one more
untimed jaxslm pass follows to recompile what the later clears dropped);
then --repeat passes of each side, interleaved (torch, then each batch_tokens of jaxslm), so
a change of load on the shared machine hits both. Each rate is the median over the repeats
of pairs / seconds of one whole pass, host work included on both sides. The "paired" ratio
is the median over repeats of torch seconds / jaxslm seconds, passes run back to back, which
cancels slow changes of load.

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

--prototype also times PackedPairScorer, defined below: pairs packed into rows with a
group-causal mask, optionally scoring a pair's common prefix once (see its docstring). It is a
measurement of what the Scorer could gain, printed per task and never in the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from compile_clock import CompileClock
from flax import nnx
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

import jaxslm
from jaxslm.checkpoint import read_metadata
from jaxslm.evals.scorer import Scorer, _round_up_pow2, allowed_tokens, default_batch_tokens
from jaxslm.hf.exporter import export_hf
from jaxslm.hf.importer import import_hf
from jaxslm.models.rope import inverse_frequencies
from jaxslm.vocab import SpeechVocab

UNITS = 500
# Cuervo & Marxer's speech-only Llamas (vocabulary 502, MLP width by the Llama rule, as in
# benchmarks/train_step.py) and an interleaved Qwen2.5-0.5B (151,665-entry tokenizer).
SHAPES: dict[str, dict] = {
    "tiny": dict(
        family="llama",
        mode="speech-only",
        vocab_size=UNITS + 2,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=16,
        tie_word_embeddings=False,
    ),
    "20m": dict(
        family="llama",
        mode="speech-only",
        vocab_size=UNITS + 2,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        head_dim=64,
        tie_word_embeddings=False,
    ),
    "85m": dict(
        family="llama",
        mode="speech-only",
        vocab_size=UNITS + 2,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        head_dim=64,
        tie_word_embeddings=False,
    ),
    "qwen0.5b": dict(
        family="qwen2",
        mode="interleaved",
        vocab_size=151936,
        text_size=151665,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        head_dim=64,
        tie_word_embeddings=True,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        bos_token_id=151643,
        eos_token_id=151643,
    ),
}
TASKS = {
    # (min units, max units, max |neg - pos| length difference); storycloze is built apart
    "swuggy": (10, 40, 3),
    "sblimp": (30, 80, 5),
    "storycloze": None,
}
DEFAULT_PAIRS = {"swuggy": 256, "sblimp": 192, "storycloze": 48}
PAIRS_DIVISOR = {"tiny": 1, "20m": 1, "85m": 4, "qwen0.5b": 16}  # keep CPU runs to minutes
STORY_PREFIX, STORY_ENDING = (200, 330), (40, 110)


# ----------------------------------------------------------------------------- model


@dataclasses.dataclass
class Model:
    ckpt: Path
    torch_dir: Path
    vocab: SpeechVocab


def build_model(shape: str, work: Path) -> Model:
    """A random HF model of `shape` in work/hf, imported by jaxslm into work/ckpt."""
    spec = dict(SHAPES[shape])
    family, mode = spec.pop("family"), spec.pop("mode")
    text_size = spec.pop("text_size", None)
    hf_dir, ckpt = work / "hf", work / "ckpt"
    if not ckpt.exists():
        print(f"building a random {shape} {family} in {hf_dir} ...", flush=True)
        params = save_random_hf(family, spec, text_size, hf_dir)
        print(f"  {params / 1e6:.1f}M parameters; importing with jaxslm ...", flush=True)
        import_hf(hf_dir, ckpt, speech_units=UNITS, mode=mode)
    vocab = read_metadata(ckpt)[1]
    torch_dir = hf_dir
    if vocab.size != spec["vocab_size"]:  # new rows sampled by jaxslm: torch reads its export
        torch_dir = work / "export"
        if not torch_dir.exists():
            print("  exporting the imported checkpoint for transformers ...", flush=True)
            export_hf(ckpt, torch_dir)
    return Model(ckpt, torch_dir, vocab)


def save_random_hf(family: str, spec: dict, text_size: int | None, out: Path) -> int:
    """Save a transformers model with random weights that make the logits vary (std ~1)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    common = dict(max_position_embeddings=4096, use_cache=False)
    if family == "llama":
        config = LlamaConfig(**spec, **common, bos_token_id=1, eos_token_id=1, pad_token_id=0)
    else:
        config = Qwen2Config(**spec, **common, use_sliding_window=False)
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
    if text_size is not None:
        save_word_tokenizer(text_size, spec["eos_token_id"], out)
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
        if task == "storycloze":
            prefix = units(int(rng.integers(*STORY_PREFIX, endpoint=True)))
            ends = [units(int(rng.integers(*STORY_ENDING, endpoint=True))) for _ in range(2)]
            pairs.append(tuple(first + prefix + end + last for end in ends))
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
        lengths = np.asarray([len(s) for pair in pairs for s in pair])
        batches = scorer._batches(lengths)
        held = 0
        for length, rows in batches:
            count = min(scorer._rows(length), _round_up_pow2(len(rows), scorer._row_multiple))
            held += count * length
        return len(batches), held


def pair_results(ll: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(LL of positives, LL of negatives, accuracy) from interleaved pos/neg LLs."""
    pos, neg = ll[0::2], ll[1::2]
    accuracy = float(np.mean(np.where(pos > neg, 1.0, np.where(pos == neg, 0.5, 0.0))))
    return pos, neg, accuracy


# ----------------------------------------------------------------------------- prototype


class PackedPairScorer:
    """Prototype of a faster layout (measured with --prototype; not jaxslm's Scorer).

    Each pair becomes one group: the pair's longest common prefix once, then the positive's
    rest and the negative's rest as two branches that both attend to the prefix but not to
    each other (`share_prefix`; without it each sequence is its own group). Groups are packed
    first-fit-decreasing into rows of `row_length` tokens with a group-causal mask; rows per
    call are batch_tokens // row_length, the last call rounded up to a power of two. One jitted
    program per row count; float32 log-softmax of each target as the Scorer does.
    """

    def __init__(self, lm, row_length: int, batch_tokens: int, share_prefix: bool):
        self.graphdef, self.params = nnx.split(lm.model)
        self.allowed = allowed_tokens(lm.vocab, None, lm.config.padded_vocab_size)
        self.row_length, self.share_prefix = row_length, share_prefix
        self.rows = max(1, batch_tokens // row_length)
        self.jit = jax.jit(_group_log_probs, static_argnums=0)

    def groups(self, pairs: list[tuple]) -> list[tuple]:
        """(tokens, positions, branches, slot sources, slot targets, slot owners) per group."""
        out = []
        for i, (pos, neg) in enumerate(pairs):
            pos, neg = np.asarray(pos, np.int32), np.asarray(neg, np.int32)
            if not self.share_prefix:
                out += [_tree(s, [], [2 * i + k]) for k, s in enumerate((pos, neg))]
                continue
            limit = min(pos.size, neg.size)
            differ = np.flatnonzero(pos[:limit] != neg[:limit])
            shared = int(differ[0]) if differ.size else limit
            shared = max(shared, 1)
            out.append(_tree(pos[:shared], [pos[shared:], neg[shared:]], [2 * i, 2 * i + 1]))
        return out

    def pack(self, groups: list[tuple]) -> list[list[list[int]]]:
        """Calls, each a list of rows, each the indices of the groups it holds."""
        length = self.row_length
        order = sorted(range(len(groups)), key=lambda g: -groups[g][0].size)
        free: list[int] = []
        placed: list[list[int]] = []
        for g in order:
            size = groups[g][0].size
            if size > length:
                raise ValueError(f"a group of {size} tokens exceeds --pack-length {length}")
            row = next((r for r, room in enumerate(free) if room >= size), None)
            if row is None:
                free.append(length)
                placed.append([])
                row = len(free) - 1
            free[row] -= size
            placed[row].append(g)
        return [placed[start : start + self.rows] for start in range(0, len(placed), self.rows)]

    def call_rows(self, chunk: list) -> int:
        return min(self.rows, 1 << (len(chunk) - 1).bit_length())

    def stats(self, pairs: list[tuple]) -> tuple[int, int]:
        calls = self.pack(self.groups(pairs))
        return len(calls), sum(self.call_rows(c) for c in calls) * self.row_length

    def __call__(self, pairs: list[tuple]) -> tuple[np.ndarray, np.ndarray, float]:
        groups = self.groups(pairs)
        length = self.row_length
        totals = np.zeros(2 * len(pairs))
        pending = []
        for chunk in self.pack(groups):
            rows = self.call_rows(chunk)
            arrays = [np.zeros((rows, length), np.int32) for _ in range(6)]
            tokens, positions, group_ids, branches, sources, targets = arrays
            owner_rows, owner_slots, owner_seqs = [], [], []
            for r, members in enumerate(chunk):
                offset = 0
                for n, g in enumerate(members, start=1):
                    ids, pos, branch, src, tgt, owners = groups[g]
                    span = slice(offset, offset + ids.size)
                    tokens[r, span], positions[r, span], branches[r, span] = ids, pos, branch
                    group_ids[r, span] = n
                    slots = slice(offset, offset + src.size)
                    sources[r, slots], targets[r, slots] = src + offset, tgt
                    for slot, seq in owners:
                        owner_rows.append(r)
                        owner_slots.append(offset + slot)
                        owner_seqs.append(seq)
                    offset += ids.size
            log_probs = self.jit(self.graphdef, self.params, *arrays, self.allowed)
            pending.append((log_probs, owner_rows, owner_slots, owner_seqs))
        for log_probs, owner_rows, owner_slots, owner_seqs in pending:
            values = np.asarray(log_probs, np.float64)[owner_rows, owner_slots]
            np.add.at(totals, owner_seqs, values)
        counts = np.asarray([len(s) - 1 for pair in pairs for s in pair])
        return pair_results(totals / counts)


def _tree(prefix: np.ndarray, rests: list[np.ndarray], seqs: list[int]) -> tuple:
    """One group: `prefix` then each rest; slots list (source index, target) and owners."""
    shared = prefix.size
    ids = np.concatenate([prefix, *rests]) if rests else prefix
    positions = np.concatenate([np.arange(shared)] + [shared + np.arange(r.size) for r in rests])
    branches = np.concatenate(
        [np.zeros(shared)] + [np.full(r.size, b + 1) for b, r in enumerate(rests)]
    )
    sources, targets = list(range(shared - 1)), list(prefix[1:])
    owners = [(k, seq) for k in range(shared - 1) for seq in seqs]
    offset = shared
    for rest, seq in zip(rests, seqs, strict=False):  # no rests: one sequence
        if rest.size:
            owners.append((len(sources), seq))
            sources.append(shared - 1)
            targets.append(rest[0])
        for k in range(rest.size - 1):
            owners.append((len(sources), seq))
            sources.append(offset + k)
            targets.append(rest[k + 1])
        offset += rest.size
    return (
        ids,
        positions.astype(np.int32),
        branches.astype(np.int32),
        np.asarray(sources, np.int32),
        np.asarray(targets, np.int32),
        owners,
    )


def _group_log_probs(
    graphdef, params, tokens, positions, groups, branches, sources, targets, allowed
):
    """[rows, length] log-probability of each slot's target given its source position."""
    model = nnx.merge(graphdef, params)
    cfg = model.config
    index = jnp.arange(tokens.shape[1])
    visible = (branches[:, None, :] == 0) | (branches[:, :, None] == branches[:, None, :])
    mask = (index[:, None] >= index[None, :]) & (groups[:, :, None] == groups[:, None, :]) & visible
    inv_freq = inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    layers, layer_state = nnx.split(model.layers)

    def run_layer(x, state):
        return nnx.merge(layers, state)(x, positions, mask, inv_freq), None

    hidden, _ = jax.lax.scan(run_layer, model.embed(tokens), layer_state)
    hidden = jnp.take_along_axis(model.final_norm(hidden), sources[..., None], axis=1)
    logits = jnp.where(allowed, model.project(hidden), -jnp.inf)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


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


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def run_task(task: str, args, model: Model, lm, loop: SlamkitLoop, clock: CompileClock) -> dict:
    count = args.pairs or max(2, DEFAULT_PAIRS[task] // PAIRS_DIVISOR[args.shape])
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
    if args.prototype:
        for share in (False, True):
            groups = PackedPairScorer(lm, 1, 1, share).groups(pairs)
            longest = max(g[0].size for g in groups)
            for length in args.pack_length or [max(64, -(-longest // 64) * 64)]:
                name = f"proto {'shared' if share else 'packed'} L={length}"
                runs[name] = PackedPairScorer(lm, length, args.pack_tokens, share)

    first, compile_s, programs, outputs = {}, {}, {}, {}
    for name, run in runs.items():
        if name != "torch":  # jit caches are per function, shared by every Scorer
            jax.clear_caches()
        clock.take()
        first[name], outputs[name] = timed(run, pairs)
        compile_s[name] = clock.take()[0]
        if name != "torch":
            programs[name] = run.jit._cache_size()
    reference = np.concatenate(outputs["torch"][:2])
    agreement = {}
    for name, out in outputs.items():
        if name == "torch":
            continue
        ours = np.concatenate(out[:2])
        same = np.mean((out[0] > out[1]) == (outputs["torch"][0] > outputs["torch"][1]))
        agreement[name] = (relative_difference(ours, reference), float(same))
        print(
            f"  {name}: max relative LL difference to torch {agreement[name][0]:.1e}, "
            f"pair decisions agree {100 * same:.1f}%, accuracy {out[2]:.3f} "
            f"(torch {outputs['torch'][2]:.3f})"
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
        per_run = ", ".join(f"{len(pairs) / s:,.1f}" for s in seconds[name])
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
    return dict(
        paired=paired,
        task=task,
        pairs=len(pairs),
        torch=rates["torch"],
        jaxslm=rates[best],
        best=best.split("=")[1],
        rates=rates,
        compile=compile_s[best],
        agreement=agreement[best],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=SHAPES, default="20m", help="model shape (default 20m)")
    parser.add_argument(
        "--task",
        choices=["all", *TASKS],
        default="all",
        help="which synthetic task to score (default: all three, one after another)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="pairs per task (default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_PAIRS.items())
        + " for tiny and 20m; a quarter of that for 85m, a sixteenth for qwen0.5b)",
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
        "--prototype",
        action="store_true",
        help="also time PackedPairScorer, this file's prototype of a packed, prefix-sharing "
        "layout (printed per task, never in the table)",
    )
    parser.add_argument(
        "--pack-length",
        default=None,
        help="prototype row lengths to try, comma-separated (default: the longest group "
        "rounded up to a multiple of 64)",
    )
    parser.add_argument(
        "--pack-tokens",
        type=int,
        default=2048,
        help="prototype rows per call x row length (default 2048)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="where the random HF model and jaxslm checkpoint go; reused when present "
        "(default: a fresh temporary directory)",
    )
    args = parser.parse_args()
    if args.batch_tokens is None:
        default = default_batch_tokens()
        args.batch_tokens = [default // 2, default, 4 * default]
    else:
        args.batch_tokens = [int(t) for t in args.batch_tokens.split(",")]
    if args.pack_length:
        args.pack_length = [int(t) for t in args.pack_length.split(",")]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="jaxslm-bench-eval-")) / args.shape
    work.mkdir(parents=True, exist_ok=True)

    model = build_model(args.shape, work)
    lm = jaxslm.load(model.ckpt, compute_dtype=dtype)
    vocab = model.vocab
    pad_id = vocab.pad_id if vocab.pad_id is not None else vocab.eos_ids[0]
    torch_model = load_torch(model.torch_dir, dtype, device)
    loop = SlamkitLoop(torch_model, vocab, pad_id, args.modality, args.batch_size, device)
    backend = jax.default_backend()
    params = sum(p.numel() for p in torch_model.parameters())
    print(
        f"shape {args.shape}: {params / 1e6:.1f}M parameters, {vocab.mode} vocabulary of "
        f"{vocab.size} (jaxslm pads to {lm.config.padded_vocab_size}), {dtype}\n"
        f"jaxslm on {backend} ({jax.devices()[0].device_kind}), torch on {device} "
        f"({torch.get_num_threads()} threads); jaxslm batch_tokens {args.batch_tokens}, "
        f"torch batch size {args.batch_size} pairs",
        flush=True,
    )
    clock = CompileClock()
    tasks = list(TASKS) if args.task == "all" else [args.task]
    rows = [run_task(task, args, model, lm, loop, clock) for task in tasks]
    gc.collect()

    print(
        f"\nscored pairs/s, median of {args.repeat} passes; jaxslm on {backend}, torch on "
        f"{device}, {dtype}"
    )
    header = (
        f"{'task':11s} {'shape':8s} {'pairs':>5s} {'jaxslm':>9s} {'bt':>5s} {'torch':>9s} "
        f"{'ratio':>6s} {'paired':>6s} {'compile':>8s} {'max rel diff':>12s} {'agree':>6s}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['task']:11s} {args.shape:8s} {r['pairs']:5d} {r['jaxslm']:9.1f} {r['best']:>5s} "
            f"{r['torch']:9.1f} {r['jaxslm'] / r['torch']:5.2f}x {r['paired']:5.2f}x "
            f"{r['compile']:7.1f}s "
            f"{r['agreement'][0]:12.1e} {100 * r['agreement'][1]:5.1f}%"
        )
    print(
        "(bt: the fastest jaxslm batch_tokens; ratio: of the medians; paired: median over the "
        "repeats of torch seconds / jaxslm seconds of back-to-back passes; compile: the first "
        "pass's JAX compile seconds)"
    )
    for r in rows:
        others = ", ".join(f"{n}: {v:,.1f}" for n, v in r["rates"].items() if n != "torch")
        print(f"  {r['task']}: {others}")


if __name__ == "__main__":
    main()
