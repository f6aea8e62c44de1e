"""The config's `dpo` section: preference optimisation (`objective: dpo`), as slamkit's Slam
recipe runs it through TRL's DPOTrainer (docs/reference.md section 8)."""

from __future__ import annotations

from dataclasses import dataclass

from jaxslm.value_checks import one_of, positive, require

OBJECTIVES = ("lm", "dpo")
REFERENCES = ("frozen", "precomputed", "none")
PREFERENCE_MODALITIES = ("speech", "text")


@dataclass(frozen=True)
class DpoSection:
    """DPO's loss and data. `beta` and `label_smoothing` as TRL's DPOConfig (smoothing:
    conservative DPO, (1 - e) L(x) + e L(-x)). `reference`: the reference model's
    log-probabilities come from a `frozen` copy of the initial parameters on the same mesh,
    are `precomputed` once before training (kept in RUN_DIR/reference_logps/ with what they
    came from, recomputed when that changes: jaxslm.training.reference_cache), or are taken
    as zero (`none`, reference-free DPO). `pairs_per_step` pairs (TRL's batch) are packed
    into the `data.batch_size` rows of `data.seq_len`. Prompts keep their last
    `max_prompt_length` tokens (BOS included), continuations their first
    `max_completion_length` (EOS included), as slamkit's tokenize_row. `modality`: a pair's
    sides are its units (speech) or its text. `share_prompt`: the prompt is computed once for
    both continuations (a trunk with two branches; attention kernels xla and cudnn), else
    prompt + chosen and prompt + rejected are two sequences (every kernel)."""

    beta: float = 0.1
    label_smoothing: float = 0.0
    reference: str = "frozen"
    pairs_per_step: int = 8
    max_prompt_length: int = 512
    max_completion_length: int = 512
    modality: str = "speech"
    share_prompt: bool = True

    def __post_init__(self) -> None:
        positive(self, "dpo.", "beta", "pairs_per_step")
        positive(self, "dpo.", "max_prompt_length", "max_completion_length")
        require(
            0 <= self.label_smoothing < 0.5,
            "dpo.label_smoothing",
            self.label_smoothing,
            "must lie in [0, 0.5): the probability that a preference label is flipped",
        )
        one_of("dpo.reference", self.reference, REFERENCES)
        one_of("dpo.modality", self.modality, PREFERENCE_MODALITIES)
