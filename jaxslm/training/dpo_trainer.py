"""The DPO run (`objective: dpo`): the trainer's loop, checkpoints, budgets, logs and export,
with batches of packed preference pairs (jaxslm.data.preference_batches), the DPO step
(jaxslm.training.dpo) against a reference model on the same mesh, and held-out preference
metrics (`eval_loss`, `eval_reward_accuracy`, ... over the validation pairs).

The reference is the run's starting point (`model.init`, or the seeded initialisation), read
again on resume, so a resumed run scores against the same reference as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxslm.config import TrainConfig
from jaxslm.data.preference_batches import (
    EncodedPairs,
    PreferenceBatches,
    RowLayout,
    SequenceRules,
)
from jaxslm.data.preference_store import open_preferences
from jaxslm.errors import JaxslmError
from jaxslm.model_dir import restore_params_from
from jaxslm.text_tokenizer import TextTokenizer
from jaxslm.training.batches import BatchSource
from jaxslm.training.dpo import continuation_log_probs, dpo_means, dpo_sums, make_dpo_step
from jaxslm.training.hooks import Hook
from jaxslm.training.placement import batch_sharding
from jaxslm.training.reference_cache import (
    cache_path,
    fingerprint,
    load_cached,
    params_checksum,
    save_cached,
)
from jaxslm.training.setup import RunPlan
from jaxslm.training.step import scratch_state
from jaxslm.training.stream_mix import StreamTokens
from jaxslm.training.trainer import Trainer
from jaxslm.vocab import SpeechVocab


def sequence_rules(
    vocab: SpeechVocab, tokenizer: TextTokenizer | None, max_prompt: int, max_completion: int
) -> SequenceRules:
    """BOS and EOS of the model's vocabulary (the text tokenizer's BOS when it has one, as
    prompts elsewhere) with the truncation limits."""
    bos = vocab.bos_id if tokenizer is None else tokenizer.bos_id
    eos = vocab.eos_ids[0] if vocab.eos_ids else None
    if eos is None and tokenizer is not None:
        eos = tokenizer.eos_id
    if eos is None:
        raise JaxslmError(
            "the model's vocabulary has no EOS token, which ends each DPO continuation (as "
            "slamkit): use a tokenizer with an EOS token (vocab.tokenizer)"
        )
    return SequenceRules(() if bos is None else (bos,), eos, max_prompt, max_completion)


class PreferenceSource(BatchSource):
    """Batches of `dpo.pairs_per_step` pairs of the preference corpus, packed into
    [data.batch_size, data.seq_len] rows; every process packs every row and keeps its shards.
    Reference log-probabilities set in `reference_logps[split]` ([pairs, 2]) ride along."""

    def __init__(self, cfg: TrainConfig, plan: RunPlan, mesh):
        self.cfg, self.plan, self.mesh = cfg, plan, mesh
        self.rows_mode = True
        self.rows = cfg.data.batch_size
        self.sharding = batch_sharding(mesh, (cfg.data.batch_size, cfg.data.seq_len))
        dpo = cfg.dpo
        if dpo.modality == "text" and plan.tokenizer is None:
            raise JaxslmError(
                f"dpo.modality=text needs a text tokenizer, and a {plan.vocab.mode} model has "
                "none: use dpo.modality=speech"
            )
        self.rules = sequence_rules(
            plan.vocab, plan.tokenizer, dpo.max_prompt_length, dpo.max_completion_length
        )
        self.layout = RowLayout(
            cfg.data.batch_size, cfg.data.seq_len, dpo.pairs_per_step, dpo.share_prompt
        )
        self.reference_logps: dict[str, np.ndarray] = {}
        self._encoded: dict[str, EncodedPairs] = {}

    def encoded(self, split: str) -> EncodedPairs:
        """The pairs of `split` as token sequences (encoded once); a pair longer than a row
        is an error."""
        if split not in self._encoded:
            self._encoded[split] = self._encode(split)
        return self._encoded[split]

    def _encode(self, split: str) -> EncodedPairs:
        cfg, plan = self.cfg, self.plan
        pairs = open_preferences(plan.corpus, split)
        encoded = EncodedPairs(pairs, cfg.dpo.modality, plan.vocab, plan.tokenizer, self.rules)
        if encoded.left_out and jax.process_index() == 0:
            print(
                f"{encoded.left_out} of the {len(pairs)} {split} pairs lack {cfg.dpo.modality} "
                "on some side (dpo.modality): left out",
                flush=True,
            )
        if split == "train" and not len(encoded):
            raise JaxslmError(
                f"data.corpus={plan.corpus.directory} has no training pair whose three sides "
                f"have {cfg.dpo.modality} (dpo.modality): choose the modality the pairs have"
            )
        positions = encoded.positions(cfg.dpo.share_prompt)
        if len(encoded) and positions.max() > cfg.data.seq_len:
            raise JaxslmError(
                f"a {split} pair takes {positions.max()} positions, more than "
                f"data.seq_len={cfg.data.seq_len}: raise data.seq_len or lower "
                "dpo.max_prompt_length / dpo.max_completion_length"
            )
        return encoded

    def iterator(self, split: str, num_epochs: int | None) -> PreferenceBatches:
        """Batches of `split`, shuffled per epoch when endless, in order otherwise."""
        return PreferenceBatches(
            self.encoded(split),
            self.layout,
            self.cfg.dpo.pairs_per_step,
            self.cfg.seed,
            shuffle=num_epochs is None,
            num_epochs=num_epochs,
            reference=self.reference_logps.get(split),
        )


class PreferenceHeldOut:
    """Every `eval.every_steps` steps: the mean DPO metrics over the first `eval.batches`
    batches of the validation pairs, as `eval_loss`, `eval_reward_accuracy`, ..."""

    def __init__(self, cfg: TrainConfig, batches: PreferenceSource, score, reference):
        """`score(params, batch, reference) -> dpo_sums`, compiled."""
        self.every = cfg.eval.every_steps
        self.batches = batches.first(cfg.eval.split, cfg.eval.batches)
        self.score, self.reference = score, reference

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def run(self, step: int, state: dict, results: dict[str, float]) -> None:
        totals = None
        for batch in self.batches:
            sums = self.score(state["params"], batch, self.reference)
            totals = sums if totals is None else jax.tree.map(jax.numpy.add, totals, sums)
        if totals is not None:
            means = dpo_means(jax.device_get(totals))
            results.update({f"eval_{name}": value for name, value in means.items()})


class DpoTrainer(Trainer):
    """A Trainer whose objective is DPO (the config's `dpo` section)."""

    def _rows_per_process(self) -> bool:
        return False  # every process packs every row (PreferenceSource)

    def _batch_source(self) -> PreferenceSource:
        return PreferenceSource(self.cfg, self.plan, self.mesh)

    def _stream_tokens(self) -> StreamTokens | None:
        return None

    def _step_summary(self, metrics: dict) -> dict[str, float]:
        return {
            **dpo_means(metrics),
            "pairs": int(metrics["pairs"]),
            "loss_tokens": int(metrics["loss_tokens"]),
        }

    def _prepare(self) -> None:
        """The reference parameters, or with `reference: precomputed` their log-probabilities
        of the train (and held-out) pairs."""
        self._reference = self._reference_params()
        if self.cfg.dpo.reference == "precomputed":
            splits = ["train"] + ([self.cfg.eval.split] if self.cfg.eval.every_steps else [])
            checksum = params_checksum(self._reference)
            for split in splits:
                self.batches.reference_logps[split] = self._precomputed(split, checksum)
            self._reference = None

    def _reference_params(self) -> dict | None:
        """The reference model's parameters on the mesh: the run's starting point (where it
        was read from goes to `self._reference_source`)."""
        if self.cfg.dpo.reference == "none":
            return None
        shardings = self.shardings["params"]
        if self.plan.init_dir is not None:
            source, params = restore_params_from(self.plan.init_dir, self.plan.model, shardings)
            self._reference_source = str(source)
            return params
        self._reference_source = f"seeded initialisation (seed {self.cfg.seed})"
        model_cfg, seed, optimizer = self.plan.model, self.cfg.seed, self.optimizer
        initial = jax.jit(
            lambda: scratch_state(model_cfg, seed, optimizer)["params"], out_shardings=shardings
        )
        return initial()

    def _precomputed(self, split: str, checksum: str) -> np.ndarray:
        """[pairs, 2] reference log-probabilities (chosen, rejected) of `split`, read from
        RUN_DIR/reference_logps/SPLIT.npz when computed from the same reference, pairs and
        settings (jaxslm.training.reference_cache), else computed and written there."""
        path = cache_path(self.run_dir, split)
        encoded = self.batches.encoded(split)
        expected = fingerprint(self.cfg, self._reference_source, checksum, encoded)
        cached = load_cached(path, expected)
        if cached is not None:
            return cached
        share = self.cfg.dpo.share_prompt
        score = jax.jit(
            lambda params, batch: continuation_log_probs(
                self.graphdef, params, batch, share, differentiable=False
            ),
            in_shardings=(self.shardings["params"], self.batches.sharding),
        )
        logps = np.zeros((len(encoded), 2), np.float32)
        for local in self.batches.iterator(split, num_epochs=1):
            scored = score(self._reference, self.batches.place(local))
            chosen, rejected = (
                np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in scored
            )
            valid = local["pair_valid"] > 0
            logps[local["pair_index"][valid]] = np.stack([chosen[valid], rejected[valid]], -1)
        if self.primary:
            save_cached(path, logps, expected)
        return logps

    def _scorer(self) -> Callable:
        """`score(params, batch, reference) -> dpo_sums`, no gradients, compiled."""
        graphdef, settings = self.graphdef, self.cfg.dpo
        return jax.jit(
            lambda params, batch, reference: dpo_sums(
                graphdef, params, batch, reference, settings, differentiable=False
            )
        )

    def _held_out(self) -> Hook:
        return PreferenceHeldOut(self.cfg, self.batches, self._scorer(), self._reference)

    def _compiled_step(self) -> Callable[[dict, dict], tuple[dict, dict]]:
        step = make_dpo_step(
            self.graphdef,
            self.optimizer,
            self.schedule,
            self.cfg.dpo,
            self.cfg.data.micro_batches,
        )
        if self._reference is None:
            return jax.jit(
                lambda state, batch: step(state, batch, None),
                in_shardings=(self.shardings, self.batches.sharding),
                out_shardings=(self.shardings, None),
                donate_argnums=0,
            )
        compiled = jax.jit(
            step,
            in_shardings=(self.shardings, self.batches.sharding, self.shardings["params"]),
            out_shardings=(self.shardings, None),
            donate_argnums=0,
        )
        reference = self._reference
        return lambda state, batch: compiled(state, batch, reference)
