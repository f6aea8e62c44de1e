"""The training config: one frozen dataclass per YAML section, `section.key=value` overrides,
and cheap validation whose messages name the source, the key and the fix.

    cfg = load_config("configs/tiny.yaml", ["optimizer.lr=1e-3", "budget.max_steps=200"])
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from jaxslm.backend import ATTENTION_KERNELS
from jaxslm.data.interleave import LAST_SPANS, METHODS
from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_write_text
from jaxslm.models.model_config import DTYPES, FAMILIES, REMAT_POLICIES
from jaxslm.textfiles import read_yaml_mapping
from jaxslm.vocab import MODES

DECAYS = ("cosine", "linear", "constant")
SHARD_BY = ("records", "rows")
BATCH_UNITS = ("rows", "samples")
COMMAND_LINE = "command line"
DEFAULT_NAME = "run"


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise, naming `key`, its value and the rule it breaks, unless `ok`."""
    if not ok:
        raise JaxslmError(f"{key}={value!r} {rule}")


def _one_of(key: str, value: str, choices: Sequence[str]) -> None:
    _require(value in choices, key, value, f"must be one of {', '.join(choices)}")


def _positive(section: object, prefix: str, *names: str) -> None:
    """Every named field of `section` is unset or > 0."""
    _each(section, prefix, names, lambda value: value > 0, "must be > 0")


def _non_negative(section: object, prefix: str, *names: str) -> None:
    """Every named field of `section` is unset or >= 0."""
    _each(section, prefix, names, lambda value: value >= 0, "must be >= 0")


def _each(
    section: object, prefix: str, names: Sequence[str], ok: Callable[[Any], bool], rule: str
) -> None:
    for name in names:
        value = getattr(section, name)
        _require(value is None or ok(value), f"{prefix}.{name}", value, rule)


@dataclass(frozen=True)
class ModelSection:
    """The decoder. With `init` (a checkpoint dir from `jaxslm-convert import-hf`) the shapes,
    family, tying and max_position_embeddings come from the checkpoint; `rope_theta` (when set),
    the dtypes, `remat`, `scan_layers` and `attention` (the kernel: auto, xla, cudnn, pallas or
    splash; see jaxslm.backend) still apply."""

    init: str | None = None
    family: str = "llama"
    hidden_size: int = 64
    intermediate_size: int = 192
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    tie_word_embeddings: bool = True
    rope_theta: float | None = None
    max_position_embeddings: int = 2048
    param_dtype: str = "float32"
    dtype: str = "float32"
    remat: str = "none"
    scan_layers: bool = True
    attention: str = "auto"

    def __post_init__(self) -> None:
        _one_of("model.family", self.family, FAMILIES)
        _one_of("model.attention", self.attention, ATTENTION_KERNELS)
        _one_of("model.param_dtype", self.param_dtype, DTYPES)
        _one_of("model.dtype", self.dtype, DTYPES)
        _one_of("model.remat", self.remat, REMAT_POLICIES)
        _positive(
            self,
            "model",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "rope_theta",
            "max_position_embeddings",
        )
        _require(
            self.num_heads % self.num_kv_heads == 0,
            "model.num_heads",
            self.num_heads,
            f"must be a multiple of model.num_kv_heads={self.num_kv_heads}",
        )
        _require(self.head_dim % 2 == 0, "model.head_dim", self.head_dim, "must be even (RoPE)")


@dataclass(frozen=True)
class VocabSection:
    """The vocabulary layout. `num_units` None: the corpus's; `tokenizer` None: the corpus's
    built-in tokenizer or the init checkpoint's."""

    mode: str = "interleaved"
    num_units: int | None = None
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        _one_of("vocab.mode", self.mode, MODES)
        _positive(self, "vocab", "num_units")
        _require(
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
    `interleave_last_span`: `full` counts the last Poisson span whole (slamkit); `cut` stops
    it at the target so that exactly `interleave_eta` of the words are spoken.
    `shard_by`: `records` gives each process its own share of the corpus (the fastest);
    `rows` has every process read the whole stream and keep its rows of each batch, so the
    batches do not depend on the number of processes (exact across cluster sizes)."""

    corpus: str = "data/toy"
    build_synthetic: bool = True
    seq_len: int = 256
    batch_size: int = 16
    micro_batches: int = 1
    batch_unit: str = "rows"
    samples_per_step: int | None = None
    stream_weights: tuple[float, ...] = (0.2024, 0.5433, 0.2543)
    interleave_method: str = "poisson"
    interleave_lam: float = 10.0
    interleave_eta: float = 0.3
    interleave_last_span: str = "full"
    frozen_interleave: bool = False
    read_threads: int = 2
    prefetch_batches: int = 2
    shard_by: str = "records"

    def __post_init__(self) -> None:
        _require(bool(self.corpus), "data.corpus", self.corpus, "must name a corpus directory")
        _one_of("data.shard_by", self.shard_by, SHARD_BY)
        _one_of("data.batch_unit", self.batch_unit, BATCH_UNITS)
        _one_of("data.interleave_last_span", self.interleave_last_span, LAST_SPANS)
        _positive(self, "data", "seq_len", "batch_size", "micro_batches", "read_threads")
        _positive(self, "data", "samples_per_step")
        self._check_samples()
        _non_negative(self, "data", "prefetch_batches", "interleave_lam")
        _require(
            self.batch_size % self.micro_batches == 0,
            "data.batch_size",
            self.batch_size,
            f"must be a multiple of data.micro_batches={self.micro_batches}: change either",
        )
        weights = self.stream_weights
        _require(
            len(weights) == 3 and min(weights) >= 0 and sum(weights) > 0,
            "data.stream_weights",
            list(weights),
            "must be 3 weights >= 0 (text, interleaved, speech) with a positive sum",
        )
        _one_of("data.interleave_method", self.interleave_method, METHODS)
        _require(
            0 <= self.interleave_eta <= 1,
            "data.interleave_eta",
            self.interleave_eta,
            "must lie in [0, 1] (the fraction of spoken words)",
        )

    def _check_samples(self) -> None:
        """`samples_per_step` is set exactly when batching by samples, and fits the rows."""
        samples = self.samples_per_step
        if self.batch_unit == "rows":
            _require(
                samples is None,
                "data.samples_per_step",
                samples,
                "needs data.batch_unit=samples (or leave it unset: null)",
            )
            return
        _require(
            samples is not None,
            "data.samples_per_step",
            samples,
            "must be set with data.batch_unit=samples (e.g. 128)",
        )
        _require(
            samples <= self.batch_size,
            "data.samples_per_step",
            samples,
            f"exceeds data.batch_size={self.batch_size} rows; a sample may need a row of its "
            f"own: raise data.batch_size to at least {samples}",
        )

    @property
    def micro_batch_size(self) -> int:
        """Rows in one accumulated part of a step."""
        return self.batch_size // self.micro_batches

    def check_batch_split(self, shards: int) -> None:
        """Refuse micro-batches whose rows do not split over `shards` (mesh data x fsdp)."""
        rows = self.micro_batch_size
        if rows % shards:
            raise JaxslmError(
                f"data.batch_size={self.batch_size} / data.micro_batches={self.micro_batches} = "
                f"{rows} rows per micro-batch do not split over mesh data x fsdp = {shards} "
                f"devices: make data.batch_size a multiple of {shards * self.micro_batches}"
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
        _positive(self, "optimizer", "lr", "eps", "clip_norm")
        _require(
            0 <= self.min_lr <= self.lr,
            "optimizer.min_lr",
            self.min_lr,
            f"must lie in [0, optimizer.lr={self.lr}]: lower min_lr or raise lr",
        )
        for name in ("b1", "b2"):
            value = getattr(self, name)
            _require(0 <= value < 1, f"optimizer.{name}", value, "must lie in [0, 1)")
        _non_negative(self, "optimizer", "weight_decay", "max_nonfinite_steps")


@dataclass(frozen=True)
class ScheduleSection:
    """Linear warmup over max(`warmup_steps`, `warmup_fraction` of the steps), then `decay`."""

    warmup_steps: int = 0
    warmup_fraction: float = 0.01
    decay: str = "cosine"

    def __post_init__(self) -> None:
        _non_negative(self, "schedule", "warmup_steps")
        _require(
            0 <= self.warmup_fraction <= 1,
            "schedule.warmup_fraction",
            self.warmup_fraction,
            "must lie in [0, 1]",
        )
        _one_of("schedule.decay", self.decay, DECAYS)

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
            _require(
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
        _positive(self, "mesh", "num_processes")
        _require(
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
        _positive(self, "checkpoint", "every_steps", "keep")


@dataclass(frozen=True)
class LoggingSection:
    """Metrics every `every_steps`; `peak_flops` per device for MFU (None: from the device)."""

    every_steps: int = 10
    tensorboard: bool = True
    progress_bar: bool = True
    peak_flops: float | None = None

    def __post_init__(self) -> None:
        _positive(self, "logging", "every_steps", "peak_flops")


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
        _non_negative(self, "eval", "every_steps", "tasks_every_steps", "tasks_batch_tokens")
        _positive(self, "eval", "batches")
        _require(bool(self.split), "eval.split", self.split, "must name a corpus split")
        from jaxslm.evals.tasks import TASKS

        for name in self.tasks:
            _one_of("eval.tasks", name, tuple(TASKS))


@dataclass(frozen=True)
class BudgetSection:
    """When the run stops (the first limit reached) and where it exports a HF model at the end."""

    max_steps: int | None = None
    train_max_tokens: int | None = None
    max_seconds: float | None = None
    export_hf: str | None = None

    def __post_init__(self) -> None:
        _positive(self, "budget", "max_steps", "train_max_tokens", "max_seconds")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run reads. `run_dir` None becomes `runs/<name>`."""

    name: str
    run_dir: str | None = None
    seed: int = 0
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

    def __post_init__(self) -> None:
        _require(bool(self.name), "name", self.name, "must be a non-empty run name")
        _require(self.seed >= 0, "seed", self.seed, "must be >= 0")
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
        _require(
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


_TOP = get_type_hints(TrainConfig)
_SECTIONS = {name: hint for name, hint in _TOP.items() if dataclasses.is_dataclass(hint)}
_SCALARS = {name: hint for name, hint in _TOP.items() if name not in _SECTIONS}
_FIELDS = {name: get_type_hints(section) for name, section in _SECTIONS.items()}
_INVALID = object()


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults, then the YAML file at `path` (sections of keys), then `key=value` overrides
    (`optimizer.lr=1e-3`, `run_dir=PATH`); values are YAML. Raises JaxslmError on any unknown
    key, wrong type or invalid value, naming the file or the command line."""
    values: dict[str, Any] = {name: {} for name in _SECTIONS}
    if path is not None:
        for key, value in _read_yaml(Path(path)).items():
            _assign_yaml(values, str(key), value, str(path))
    for item in overrides:
        key, value, text = _parse_override(item)
        _assign(values, key, value, COMMAND_LINE, text)
    values.setdefault("name", Path(path).stem if path is not None else DEFAULT_NAME)
    try:
        sections = {name: cls(**values.pop(name)) for name, cls in _SECTIONS.items()}
        return TrainConfig(**values, **sections)
    except JaxslmError as err:
        sources = ([str(path)] if path is not None else []) + ([COMMAND_LINE] if overrides else [])
        raise JaxslmError(f"{' + '.join(sources) or 'defaults'}: {err}") from None


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The resolved config as plain YAML/JSON-ready values, nested by section."""
    return _plain(cfg)


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML that `load_config` reads back to an equal config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _plain(obj: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = _plain(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _read_yaml(path: Path) -> dict[Any, Any]:
    return read_yaml_mapping(path, "config file", "sections (model:, data:, ...)")


def _assign_yaml(values: dict[str, Any], key: str, value: Any, where: str) -> None:
    """One top-level YAML entry: a section mapping, or a top-level key."""
    if key not in _SECTIONS:
        _assign(values, key, value, where)
        return
    if value is None:
        return
    if not isinstance(value, dict):
        raise JaxslmError(f"{where}: section '{key}' must be a mapping of keys, got {value!r}")
    for leaf, leaf_value in value.items():
        _assign(values, f"{key}.{leaf}", leaf_value, where)


def _assign(
    values: dict[str, Any], key: str, value: Any, where: str, text: str | None = None
) -> None:
    """Type-check `value` for the dotted `key` and store it; `text` is the command-line spelling,
    kept verbatim for string keys (so `name=2024` is the string '2024')."""
    section, _, leaf = key.partition(".")
    if section in _SECTIONS and leaf in _FIELDS[section]:
        hint, target, name = _FIELDS[section][leaf], values[section], leaf
    elif key in _SCALARS:
        hint, target, name = _SCALARS[key], values, key
    elif section in _SECTIONS and not leaf:
        raise JaxslmError(f"{where}: '{key}' is a section; set its keys as {key}.KEY=VALUE")
    else:
        raise _unknown(key, where)
    if text is not None and value is not None and _accepts_str(hint):
        value = text.strip()
    target[name] = _coerce(value, hint, key, where)


def _parse_override(item: str) -> tuple[str, Any, str]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise JaxslmError(
            f"{COMMAND_LINE}: {item!r} is not an override; write section.key=value "
            "(e.g. optimizer.lr=1e-3 or data.stream_weights=[1,0,0]) or run_dir=PATH"
        )
    try:
        return key, yaml.safe_load(text), text
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or err
        raise JaxslmError(
            f"{COMMAND_LINE}: {key}={text} is not a YAML value ({problem}); quote strings "
            "and write lists as [a,b,c]"
        ) from None


def _unknown(key: str, where: str) -> JaxslmError:
    section, leaf = _split(key)
    what = "section" if section and section not in _SECTIONS else "key"
    name = section if what == "section" else key
    guess = _closest(key)
    if guess:
        fix = f"did you mean '{guess}'?"
    else:
        options = _FIELDS[section] if section in _SECTIONS else [*_SCALARS, *_SECTIONS]
        fix = f"valid: {', '.join(options)}"
    return JaxslmError(f"{where}: unknown {what} '{name}'; {fix}")


def _closest(key: str) -> str | None:
    """The valid dotted key nearest to `key`: by spelling, or `learning_rate` -> `lr`."""
    section, leaf = _split(key)
    if section in _SECTIONS:
        known = [f"{section}.{name}" for name in _FIELDS[section]]
    else:
        known = [*_SCALARS, *_SECTIONS]
        known += [f"{sec}.{name}" for sec, names in _FIELDS.items() for name in names]
    by_leaf: dict[str, str] = {}
    for full in known:
        by_leaf.setdefault(full.rpartition(".")[2], full)
    leaf = leaf.lower()
    match = difflib.get_close_matches(leaf, by_leaf, n=1, cutoff=0.5)
    if match:
        return by_leaf[match[0]]
    initials = "".join(word[:1] for word in leaf.split("_"))
    return by_leaf.get(initials)


def _split(key: str) -> tuple[str, str]:
    """('section', 'rest') of a dotted key; ('', key) without a dot."""
    section, _, leaf = key.partition(".")
    return (section, leaf) if leaf else ("", key)


def _accepts_str(hint: Any) -> bool:
    union = get_origin(hint) in (Union, types.UnionType)
    return hint is str or (union and str in get_args(hint))


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """`value` as the type `hint` (bool, int, float, str, a tuple of str or float, `X | None`)."""
    base = hint
    if get_origin(hint) in (Union, types.UnionType):
        if value is None:
            return None
        (base,) = (arg for arg in get_args(hint) if arg is not type(None))
    result = _convert(value, base)
    if result is _INVALID:
        expected = _describe(base) + (" or null" if base is not hint else "")
        raise JaxslmError(f"{where}: {key} must be {expected}, got {value!r}")
    numbers = result if isinstance(result, tuple) else (result,)
    if any(isinstance(n, float) and not math.isfinite(n) for n in numbers):
        unset = " (or null)" if base is not hint else ""
        raise JaxslmError(
            f"{where}: {key}={value!r} must be finite, not inf or nan: give a number{unset}"
        )
    return result


def _convert(value: Any, hint: Any) -> Any:
    if hint is bool or isinstance(value, bool):
        return value if hint is bool and isinstance(value, bool) else _INVALID
    if hint is str:
        return value if isinstance(value, str) else _INVALID
    if get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            return _INVALID
        items = [_convert(item, get_args(hint)[0]) for item in value]
        return _INVALID if _INVALID in items else tuple(items)
    number = _number(value)
    if number is None:
        return _INVALID
    if hint is float:
        return float(number)
    return int(number) if float(number).is_integer() else _INVALID


def _number(value: Any) -> int | float | None:
    """An int or float, also from text PyYAML leaves as a string (`1e-3`, `2e9`)."""
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _describe(hint: Any) -> str:
    if get_origin(hint) is tuple:
        return "a list of " + {str: "strings", float: "numbers"}[get_args(hint)[0]]
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]
