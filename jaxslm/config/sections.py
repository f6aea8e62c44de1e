"""The config's sections besides `model`: one frozen dataclass per YAML section, each checking
its own values (see jaxslm.config.model_section for `model`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from jaxslm.data.batch_split import check_batch_split
from jaxslm.data.interleave import LAST_SPANS, METHODS
from jaxslm.data.record_order import SIMS_WEIGHTS, check_stream_weights
from jaxslm.errors import JaxslmError
from jaxslm.value_checks import non_negative, one_of, positive, require
from jaxslm.vocab import MODES, SPEECH_LAYOUTS

DECAYS = ("cosine", "linear", "constant")
SHARD_BY = ("records", "rows")
BATCH_UNITS = ("rows", "samples")


@dataclass(frozen=True)
class VocabSection:
    """The vocabulary layout. `num_units` None: the corpus's; `tokenizer` None: the corpus's
    built-in tokenizer or the init checkpoint's; `speech_layout` (speech-only): slamkit's
    `<PAD>`, `<S>`, units, or cuervo-marxer's units, `<S>`, `<PAD>`."""

    mode: str = "interleaved"
    num_units: int | None = None
    tokenizer: str | None = None
    speech_layout: str = "slamkit"

    def __post_init__(self) -> None:
        one_of("vocab.mode", self.mode, MODES)
        one_of("vocab.speech_layout", self.speech_layout, SPEECH_LAYOUTS)
        positive(self, "vocab.", "num_units")
        require(
            self.mode != "text" or self.num_units is None,
            "vocab.num_units",
            self.num_units,
            "must be unset (null) with vocab.mode=text, which has no speech units",
        )


@dataclass(frozen=True)
class DataSection:
    """The corpus and the batches: `batch_size` rows of `seq_len` per optimizer step (global),
    in `micro_batches` accumulated parts; `stream_weights` mix text, interleaved and speech
    per sample (a document's piece of at most `seq_len` tokens, as slamkit's chunks).

    `batch_unit`: `rows` fills every row (fixed tokens per step); `samples` puts exactly
    `samples_per_step` samples in each step (slamkit's batch; tokens per step vary), packed
    into the `batch_size` rows, which must be at least as many.
    `interleave_eta` / `interleave_lam` are slamkit's `interleave_prob` / `interleave_span`:
    for `poisson` the spoken-word target and the mean span length, for `span` the per-word
    probability of starting a span and its length in words (0.035 and 10 speak about 30%).
    `interleave_last_span`: `full` counts the last Poisson span whole (slamkit); `cut` stops
    it at the target so that exactly `interleave_eta` of the words are spoken.
    `build_synthetic`: build the built-in toy corpus (or preference set) at `corpus` when
    nothing is there (configs/tiny*.yaml set it); off, a missing corpus is an error, so a
    mistyped path never trains on the toy language.
    `shard_by`: `records` gives each process its own share of the corpus (the fastest);
    `rows` has every process read the whole stream and keep its rows of each batch, so the
    batches do not depend on the number of processes (exact across cluster sizes)."""

    corpus: str = "data/toy"
    build_synthetic: bool = False
    seq_len: int = 256
    batch_size: int = 16
    micro_batches: int = 1
    batch_unit: str = "rows"
    samples_per_step: int | None = None
    stream_weights: tuple[float, ...] = SIMS_WEIGHTS
    interleave_method: str = "poisson"
    interleave_lam: float = 10.0
    interleave_eta: float = 0.3
    interleave_last_span: str = "full"
    frozen_interleave: bool = False
    read_threads: int = 2
    prefetch_batches: int = 2
    shard_by: str = "records"

    def __post_init__(self) -> None:
        require(bool(self.corpus), "data.corpus", self.corpus, "must name a corpus directory")
        one_of("data.shard_by", self.shard_by, SHARD_BY)
        one_of("data.batch_unit", self.batch_unit, BATCH_UNITS)
        one_of("data.interleave_last_span", self.interleave_last_span, LAST_SPANS)
        positive(self, "data.", "seq_len", "batch_size", "micro_batches", "read_threads")
        require(self.seq_len >= 2, "data.seq_len", self.seq_len, "must be at least 2 (a target)")
        positive(self, "data.", "samples_per_step")
        self._check_samples()
        non_negative(self, "data.", "prefetch_batches", "interleave_lam")
        self.check_batch_split(shards=1)
        check_stream_weights(self.stream_weights, "data.stream_weights")
        one_of("data.interleave_method", self.interleave_method, METHODS)
        require(
            0 <= self.interleave_eta <= 1,
            "data.interleave_eta",
            self.interleave_eta,
            "must lie in [0, 1] (the fraction of spoken words, or for `span` the probability "
            "that a word starts a span)",
        )
        require(
            self.interleave_method != "span"
            or (self.interleave_lam >= 1 and float(self.interleave_lam).is_integer()),
            "data.interleave_lam",
            self.interleave_lam,
            "must be a whole number >= 1 with interleave_method=span (the span length in words)",
        )

    def _check_samples(self) -> None:
        """`samples_per_step` is set exactly when batching by samples."""
        samples = self.samples_per_step
        if self.batch_unit == "rows":
            require(
                samples is None,
                "data.samples_per_step",
                samples,
                "needs data.batch_unit=samples (or leave it unset: null)",
            )
            return
        require(
            samples is not None,
            "data.samples_per_step",
            samples,
            "must be set with data.batch_unit=samples (e.g. 128)",
        )

    @property
    def micro_batch_size(self) -> int:
        """Rows in one accumulated part of a step."""
        return self.batch_size // self.micro_batches

    def check_batch_split(self, shards: int, processes: int = 1) -> None:
        """Refuse micro-batches whose rows do not split over `shards` (mesh data x fsdp), or
        rows and samples that do not split over `processes`."""
        check_batch_split(
            self.batch_size, self.micro_batches, shards, processes, self.samples_per_step
        )


@dataclass(frozen=True)
class OptimizerSection:
    """AdamW with peak `lr` decaying to `min_lr`, global-norm clipping, and a run that stops
    after `max_nonfinite_steps` consecutive skipped (non-finite) updates."""

    lr: float = 3e-3
    min_lr: float = 3e-4
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float = 1.0
    max_nonfinite_steps: int = 10

    def __post_init__(self) -> None:
        positive(self, "optimizer.", "lr", "eps", "clip_norm")
        require(
            0 <= self.min_lr <= self.lr,
            "optimizer.min_lr",
            self.min_lr,
            f"must lie in [0, optimizer.lr={self.lr}]: lower min_lr or raise lr",
        )
        for name in ("b1", "b2"):
            value = getattr(self, name)
            require(0 <= value < 1, f"optimizer.{name}", value, "must lie in [0, 1)")
        non_negative(self, "optimizer.", "weight_decay", "max_nonfinite_steps")


@dataclass(frozen=True)
class ScheduleSection:
    """Linear warmup over max(`warmup_steps`, `warmup_fraction` of the steps), then `decay`."""

    warmup_steps: int = 0
    warmup_fraction: float = 0.01
    decay: str = "cosine"

    def __post_init__(self) -> None:
        non_negative(self, "schedule.", "warmup_steps")
        require(
            0 <= self.warmup_fraction <= 1,
            "schedule.warmup_fraction",
            self.warmup_fraction,
            "must lie in [0, 1]",
        )
        one_of("schedule.decay", self.decay, DECAYS)

    def warmup(self, total_steps: int) -> int:
        """Warmup steps of a run of `total_steps`: the fraction rounded up, as transformers'
        `TrainingArguments.get_warmup_steps` does (ceil(steps x warmup_ratio))."""
        return max(self.warmup_steps, math.ceil(total_steps * self.warmup_fraction))


@dataclass(frozen=True)
class MeshSection:
    """Device mesh sizes (at most one -1: the remaining devices) and, for multi-process runs,
    the `jax.distributed.initialize` arguments (None: auto-detected)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def __post_init__(self) -> None:
        axes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        for axis, size in axes.items():
            require(
                size == -1 or size > 0,
                f"mesh.{axis}",
                size,
                "must be a device count > 0, or -1 for the remaining devices",
            )
        auto = [f"mesh.{axis}" for axis, size in axes.items() if size == -1]
        if len(auto) > 1:
            raise JaxslmError(
                f"{' and '.join(auto)} are -1: at most one mesh axis may take the remaining "
                "devices; give the others explicit sizes"
            )
        positive(self, "mesh.", "num_processes")
        require(
            self.process_id is None
            or (self.num_processes is not None and 0 <= self.process_id < self.num_processes),
            "mesh.process_id",
            self.process_id,
            f"must lie in [0, mesh.num_processes={self.num_processes}): set both",
        )


@dataclass(frozen=True)
class CheckpointSection:
    """Orbax checkpoints every `every_steps`, keeping the last `keep` (and the best eval loss)."""

    every_steps: int = 100
    keep: int = 3
    keep_best: bool = True
    async_save: bool = True

    def __post_init__(self) -> None:
        positive(self, "checkpoint.", "every_steps", "keep")


@dataclass(frozen=True)
class LoggingSection:
    """Metrics every `every_steps`; `peak_flops` per device for MFU (None: from the device)."""

    every_steps: int = 10
    tensorboard: bool = True
    progress_bar: bool = True
    peak_flops: float | None = None

    def __post_init__(self) -> None:
        positive(self, "logging.", "every_steps", "peak_flops")


@dataclass(frozen=True)
class EvalSection:
    """Held-out loss over `batches` batches of `split` every `every_steps` (0: never); and the
    likelihood benchmarks `tasks` (see `python -m jaxslm.evaluate --help`), read from
    `tasks_dir/<task>.jsonl` or `tasks_dir/<task>/` (default: the corpus's eval/ folder), every
    `tasks_every_steps` steps and at the end of training (0: only at the end), scoring about
    `tasks_batch_tokens` tokens per batch (0: 1024 on CPU, 16384 on accelerators)."""

    every_steps: int = 100
    batches: int = 4
    split: str = "validation"
    tasks: tuple[str, ...] = ()
    tasks_dir: str | None = None
    tasks_every_steps: int = 0
    tasks_batch_tokens: int = 0

    def __post_init__(self) -> None:
        non_negative(self, "eval.", "every_steps", "tasks_every_steps", "tasks_batch_tokens")
        positive(self, "eval.", "batches")
        require(bool(self.split), "eval.split", self.split, "must name a corpus split")
        from jaxslm.evals.tasks import TASKS

        for name in self.tasks:
            one_of("eval.tasks", name, tuple(TASKS))


@dataclass(frozen=True)
class BudgetSection:
    """When the run stops (the first limit reached) and where it exports a HF model at the end."""

    max_steps: int | None = None
    train_max_tokens: int | None = None
    max_seconds: float | None = None
    export_hf: str | None = None

    def __post_init__(self) -> None:
        positive(self, "budget.", "max_steps", "train_max_tokens", "max_seconds")
