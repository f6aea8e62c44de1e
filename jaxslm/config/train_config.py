"""The whole training config: its sections, the checks that span sections, and the budget."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from jaxslm.config.dpo_section import OBJECTIVES, DpoSection
from jaxslm.config.model_section import ModelSection
from jaxslm.config.sections import (
    BudgetSection,
    CheckpointSection,
    DataSection,
    EvalSection,
    LoggingSection,
    MeshSection,
    OptimizerSection,
    ScheduleSection,
    VocabSection,
)
from jaxslm.errors import JaxslmError
from jaxslm.value_checks import one_of, require


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run reads. `run_dir` None becomes `runs/<name>`. `objective`:
    `lm` (next-token prediction on a corpus) or `dpo` (preference optimisation on a preference
    corpus, configured by the `dpo` section)."""

    name: str
    run_dir: str | None = None
    seed: int = 0
    objective: str = "lm"
    model: ModelSection = field(default_factory=ModelSection)
    vocab: VocabSection = field(default_factory=VocabSection)
    data: DataSection = field(default_factory=DataSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    mesh: MeshSection = field(default_factory=MeshSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    eval: EvalSection = field(default_factory=EvalSection)
    budget: BudgetSection = field(default_factory=BudgetSection)
    dpo: DpoSection = field(default_factory=DpoSection)

    def __post_init__(self) -> None:
        require(bool(self.name), "name", self.name, "must be a non-empty run name")
        require(self.seed >= 0, "seed", self.seed, "must be >= 0")
        one_of("objective", self.objective, OBJECTIVES)
        if self.run_dir is None:
            object.__setattr__(self, "run_dir", f"runs/{self.name}")
        budget = self.budget
        if budget.max_steps is budget.train_max_tokens is budget.max_seconds is None:
            raise JaxslmError(
                "budget: nothing stops the run; set budget.max_steps, budget.train_max_tokens "
                "or budget.max_seconds (e.g. budget.max_steps=1000)"
            )
        if -1 not in (self.mesh.data, self.mesh.fsdp):
            self.data.check_batch_split(self.mesh.data * self.mesh.fsdp)
        model = self.model
        require(
            model.init is not None or self.data.seq_len <= model.max_position_embeddings,
            "data.seq_len",
            self.data.seq_len,
            f"exceeds model.max_position_embeddings={model.max_position_embeddings}: "
            "lower one or raise the other",
        )

    @property
    def tokens_per_step(self) -> int:
        """Token positions consumed by one optimizer step (all processes)."""
        return self.data.batch_size * self.data.seq_len

    @property
    def total_steps(self) -> int | None:
        """Steps allowed by `max_steps` and `train_max_tokens`; None if only time bounds the run."""
        limits = [self.budget.max_steps] if self.budget.max_steps is not None else []
        if self.budget.train_max_tokens is not None:
            limits.append(math.ceil(self.budget.train_max_tokens / self.tokens_per_step))
        return min(limits, default=None)
