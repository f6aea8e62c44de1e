"""DPO step time of jaxslm's jitted DPO step beside TRL's DPOTrainer, on the same pairs.

Both sides train the same speech-only decoder (a jaxslm.models.presets shape with 500 units,
float32, random weights) on the same --pairs random (prompt, chosen, rejected) unit pairs,
built as slamkit's DPO tokenize_row builds them (BOS + prompt; completion + EOS), with a
frozen reference model (a second copy of the initial weights), the sigmoid loss at beta 0.1,
global-norm clipping at 1.0 and AdamW; one device each.

  jaxslm  jaxslm.training.dpo.make_dpo_step, jitted and donated as the trainer runs it: the
          pairs packed into as few rows of --seq-len as hold them, with the prompt computed
          once for both continuations (shared prompt, dpo.share_prompt) or prompt + chosen
          and prompt + rejected as two sequences; policy and reference in one jitted step
  trl     DPOTrainer's loss (`_compute_loss`: chosen and rejected concatenated into 2 x pairs
          padded rows, policy and reference forward), backward, clip_grad_norm_, AdamW step;
          transformers SDPA attention, eager PyTorch

    python benchmarks/dpo.py [--shape tiny|20m] [--pairs 16] [--prompt 96] [--completion 48]
        [--seq-len 512] [--steps 5] [--warmup 2] [--repeat 3]

Each figure is the median over --repeat timed loops of --steps steps, after compilation and
--warmup untimed steps; pairs/s counts the pairs of each step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import torch
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from train_step import torch_model  # noqa: E402 (the benchmark beside this one)
from trl_oracle import trl_batch, trl_dpo_trainer  # noqa: E402 (the tests' TRL oracle)

from jaxslm.config.dpo_section import DpoSection  # noqa: E402
from jaxslm.data.preference_batches import RowLayout, pack_pairs, pair_positions  # noqa: E402
from jaxslm.models.decoder import abstract_decoder  # noqa: E402
from jaxslm.models.presets import speech_model_config  # noqa: E402
from jaxslm.sharding import make_mesh  # noqa: E402
from jaxslm.training.dpo import make_dpo_step  # noqa: E402
from jaxslm.training.optimizer import make_optimizer  # noqa: E402
from jaxslm.training.placement import batch_sharding, state_shardings  # noqa: E402
from jaxslm.training.step import scratch_state  # noqa: E402

UNITS, BOS, EOS = 500, 1, 1  # speech-only ids: <PAD> 0, <S> 1 (BOS and EOS), unit u = u + 2
BETA, LEARNING_RATE, CLIP_NORM = 0.1, 5e-5, 1.0


def random_pairs(count: int, prompt: int, completion: int) -> list[tuple[np.ndarray, ...]]:
    """(BOS + prompt, chosen + EOS, rejected + EOS) ids of `count` random pairs."""
    rng = np.random.default_rng(0)

    def units(length: int) -> list[int]:
        return (rng.integers(0, UNITS, length) + 2).tolist()

    return [
        (
            np.asarray([BOS, *units(prompt)], np.int32),
            np.asarray([*units(completion), EOS], np.int32),
            np.asarray([*units(completion), EOS], np.int32),
        )
        for _ in range(count)
    ]


def timed(step, steps: int, warmup: int, repeat: int, pairs: int, wait) -> float:
    """Median pairs/s of `step()` (`wait()` blocks until its work is done)."""
    for _ in range(warmup):
        step()
    wait()
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wait()
        rates.append(steps * pairs / (time.perf_counter() - start))
    return statistics.median(rates)


def jaxslm_pairs_per_second(cfg, pairs, args, share_prompt: bool) -> float:
    """Median pairs/s of jaxslm's jitted DPO step (frozen reference) on one device, the
    pairs (all of one length) packed into as few rows as hold them."""
    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    schedule = optax.constant_schedule(LEARNING_RATE)
    optimizer = make_optimizer(
        schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip_norm=CLIP_NORM
    )  # torch.optim.AdamW's defaults, as the TRL side
    shardings = state_shardings(mesh, cfg, optimizer)
    sizes = [len(s) for s in pairs[0]]
    per_row = args.seq_len // pair_positions(*sizes, share_prompt)
    if per_row < 1:
        raise SystemExit(f"a pair does not fit --seq-len {args.seq_len}")
    layout = RowLayout(-(-len(pairs) // per_row), args.seq_len, per_row, share_prompt)
    rows = batch_sharding(mesh, (layout.rows, args.seq_len))
    graphdef = nnx.split(abstract_decoder(cfg))[0]
    host = pack_pairs(list(enumerate(pairs)), layout)
    settings = DpoSection(beta=BETA, share_prompt=share_prompt)
    with jax.set_mesh(mesh):
        state = jax.jit(lambda: scratch_state(cfg, 0, optimizer), out_shardings=shardings)()
        reference = jax.jit(
            lambda: scratch_state(cfg, 0, optimizer)["params"], out_shardings=shardings["params"]
        )()
        batch = jax.device_put(host, rows)
        step = jax.jit(
            make_dpo_step(graphdef, optimizer, schedule, settings),
            in_shardings=(shardings, rows, shardings["params"]),
            out_shardings=(shardings, None),
            donate_argnums=0,
        )
        holder = {"state": state}

        def one_step() -> None:
            holder["state"], holder["metrics"] = step(holder["state"], batch, reference)

        return timed(
            one_step,
            args.steps,
            args.warmup,
            args.repeat,
            len(pairs),
            lambda: jax.block_until_ready(holder["state"]),
        )


def trl_pairs_per_second(cfg, pairs, args) -> float:
    """Median pairs/s of TRL's DPO loss, backward, clipping and AdamW on the CPU."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    policy, reference = torch_model(cfg), torch_model(cfg)  # same seed: the same weights
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"<PAD>": 0, "<S>": 1}, unk_token="<PAD>")),
        pad_token="<PAD>",
        bos_token="<S>",
        eos_token="<S>",
    )
    trainer = trl_dpo_trainer(policy, reference, tokenizer, BETA)
    batch = trl_batch(
        [
            {"prompt_ids": p.tolist(), "chosen_ids": c.tolist(), "rejected_ids": r.tolist()}
            for p, c, r in pairs
        ]
    )
    model = trainer.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)

    def one_step() -> None:
        loss = trainer._compute_loss(model, batch, False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed(one_step, args.steps, args.warmup, args.repeat, len(pairs), lambda: None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=["tiny", "20m"], default="tiny")
    parser.add_argument("--pairs", type=int, default=16, help="pairs per step")
    parser.add_argument("--prompt", type=int, default=96, help="prompt units")
    parser.add_argument("--completion", type=int, default=48, help="units of each continuation")
    parser.add_argument("--seq-len", type=int, default=512, help="jaxslm row length")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--repeat", type=int, default=3, help="timed loops per figure (median)")
    args = parser.parse_args()
    cfg = speech_model_config(args.shape, UNITS)
    cfg = cfg.replace(max_position_embeddings=max(args.seq_len, cfg.max_position_embeddings))
    pairs = random_pairs(args.pairs, args.prompt, args.completion)
    print(
        f"shape {args.shape}, {args.pairs} pairs of {args.prompt} + 2 x {args.completion} units, "
        f"jaxslm rows of {args.seq_len}, CPU"
    )
    trl = trl_pairs_per_second(cfg, pairs, args)
    print(
        f"trl (DPOTrainer, eager)      {trl:8.2f} pairs/s  {1000 * args.pairs / trl:8.1f} ms/step"
    )
    for share in (True, False):
        ours = jaxslm_pairs_per_second(cfg, pairs, args, share)
        name = "jaxslm (shared prompt)" if share else "jaxslm (two sequences)"
        print(
            f"{name:28s} {ours:8.2f} pairs/s  {1000 * args.pairs / ours:8.1f} ms/step  "
            f"{ours / trl:.2f}x trl"
        )


if __name__ == "__main__":
    main()
