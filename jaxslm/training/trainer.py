"""The training run: state on the mesh, the data iterator and the step loop; between steps,
the hooks that are due (held-out loss, benchmarks, checkpoints: jaxslm.training.hooks), the
step's report (jaxslm.training.step_report) and the stop conditions (budget, wall clock,
SIGTERM).

A run resumes by itself: when RUN_DIR/checkpoints holds a checkpoint, training continues from
the newest intact one (model, optimizer, step and data iterator). One process at a time trains
in a run directory (RUN_DIR/run.lock).
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from jaxslm import backend
from jaxslm.config import TrainConfig, dump_config, load_config
from jaxslm.data.batch_split import check_process_shards
from jaxslm.errors import JaxslmError
from jaxslm.evals.runner import format_table
from jaxslm.fsutil import atomic_directory, atomic_write_text, prepare_output
from jaxslm.hf.config_map import is_jaxslm_export
from jaxslm.model_dir import METADATA_FILE, TOKENIZER_DIR, restore_params, write_metadata
from jaxslm.models.decoder import abstract_decoder
from jaxslm.sharding import make_mesh
from jaxslm.training import distributed
from jaxslm.training.batches import BatchSource
from jaxslm.training.hooks import STREAM_TOKENS_KEY, Checkpointing, HeldOut, Hook, StopRequests
from jaxslm.training.metrics_log import MetricsLog
from jaxslm.training.optimizer import learning_rate_schedule, make_optimizer
from jaxslm.training.placement import param_shardings, state_shardings
from jaxslm.training.run_lock import lock_run_dir
from jaxslm.training.setup import plan_run, save_tokenizer
from jaxslm.training.step import init_state, make_train_step, scratch_state
from jaxslm.training.step_checkpoints import RunCheckpoints
from jaxslm.training.step_report import StepReporter, Throughput, lm_summary
from jaxslm.training.stream_mix import StreamTokens
from jaxslm.training.task_eval import TaskEvaluator

CONFIG_FILE = "config.yaml"
CORPUS_FINGERPRINT_FILE = "corpus_fingerprint.json"
RESUME_SECTIONS = ("model", "vocab", "data", "dpo", "optimizer", "schedule")
# Top-level keys a resumed run keeps: initialisation and interleaving derive from the seed.
RESUME_KEYS = ("seed", "objective")
# Keys of RESUME_SECTIONS that change how a run computes, not what it trains: a resumed run may
# change them (another compute dtype, kernel or remat policy on another machine, more reading
# threads).
RUNTIME_KEYS = (
    "model.dtype",
    "model.attention",
    "model.remat",
    "model.scan_layers",
    "data.read_threads",
    "data.prefetch_batches",
    "data.build_synthetic",
    "optimizer.max_nonfinite_steps",
)
FINGERPRINT_PARTS = {  # Corpus.fingerprint's parts, as a refusal names them
    "metadata": "corpus.json (units, record counts, source)",
    "tokenizer": "tokenizer",
    "records": "record files",
}


class Trainer:
    """One run: state on the mesh, the data iterator, checkpoints and logs."""

    def __init__(self, cfg: TrainConfig):
        distributed.initialize(cfg.mesh)
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.primary = jax.process_index() == 0
        self.mesh = make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
        self._check_batch()
        self._check_outputs()
        self.lock = lock_run_dir(self.run_dir, self.primary)
        try:
            self._plan()
        except BaseException:
            self.lock.release()
            raise

    def _plan(self) -> None:
        """Model, optimizer, shardings and checkpoints of the run (under the run's lock)."""
        cfg = self.cfg
        self.plan = plan_run(cfg)
        self._report_attention()
        self.total_steps = cfg.total_steps
        opt = cfg.optimizer
        horizon, warmup, decay = schedule_shape(cfg)
        if self.total_steps and warmup > self.total_steps and self.primary:
            warnings.warn(
                f"schedule: {warmup} warmup steps outlast the run's {self.total_steps}: the "
                "learning rate never reaches optimizer.lr (as transformers' schedules)",
                stacklevel=2,
            )
        self.schedule = learning_rate_schedule(opt.lr, opt.min_lr, horizon, warmup, decay)
        self.optimizer = make_optimizer(
            self.schedule,
            b1=opt.b1,
            b2=opt.b2,
            eps=opt.eps,
            weight_decay=opt.weight_decay,
            clip_norm=opt.clip_norm,
        )
        self.graphdef = nnx.split(abstract_decoder(self.plan.model))[0]
        self.shardings = state_shardings(self.mesh, self.plan.model, self.optimizer)
        self.batches = self._batch_source()
        self.checkpoints = RunCheckpoints(
            self.run_dir,
            keep=cfg.checkpoint.keep,
            keep_best=cfg.checkpoint.keep_best,
            async_save=cfg.checkpoint.async_save,
            per_process_data=not self.batches.rows_mode,
        )

    def _prepare(self) -> None:
        """The objective's work before the loop, once a resume is known to be allowed."""

    def _batch_source(self) -> BatchSource:
        """Where the run's batches come from (the objective's data)."""
        return BatchSource(self.cfg, self.plan, self.mesh)

    def _held_out(self) -> Hook:
        """The hook that measures the held-out loss every `eval.every_steps`."""
        return HeldOut(self.cfg, self.batches, self.graphdef, self.shardings["params"])

    def _stream_tokens(self) -> StreamTokens | None:
        """What counts the realised stream shares (None: the objective has no streams)."""
        return StreamTokens(gather=not self.batches.rows_mode)

    def _step_summary(self, metrics: dict) -> dict[str, float]:
        """The record fields of a step's `metrics`, `loss` among them."""
        return lm_summary(metrics)

    def _compiled_step(self) -> Callable[[dict, dict], tuple[dict, dict]]:
        """`step(state, batch) -> (state, metrics)`, compiled for the mesh."""
        return jax.jit(
            make_train_step(
                self.graphdef, self.optimizer, self.schedule, self.cfg.data.micro_batches
            ),
            in_shardings=(self.shardings, self.batches.sharding),
            out_shardings=(self.shardings, None),
            donate_argnums=0,
        )

    def _report_attention(self) -> None:
        """Say which attention kernel the training step runs (and stop now if the one asked
        for cannot run here)."""
        model = self.plan.model
        kernel = backend.attention_kernel(
            model.attention,
            dtype=model.dtype,
            head_dim=model.head_dim,
            length=self.cfg.data.seq_len,
            branches=False,
        )
        if self.primary:
            print(f"attention kernel: {kernel} (model.attention={model.attention})", flush=True)

    def _check_batch(self) -> None:
        data, fsdp = self.mesh.shape["data"], self.mesh.shape["fsdp"]
        self.cfg.data.check_batch_split(data * fsdp, jax.process_count())
        if self._rows_per_process():
            check_process_shards(data, fsdp, jax.process_count())

    def _check_outputs(self) -> None:
        """Before any work: `run_dir` is not a model folder made by something else (training
        would rewrite its jaxslm.json beside another model's parameters), and
        `budget.export_hf` is new or an earlier jaxslm export, which the run replaces."""
        if (self.run_dir / METADATA_FILE).is_file() and not (self.run_dir / CONFIG_FILE).is_file():
            raise JaxslmError(
                f"run_dir={self.run_dir} holds a model that no training run made (it has "
                f"{METADATA_FILE} but no {CONFIG_FILE}); choose a new run_dir=PATH, or train "
                f"from that model with model.init={self.run_dir}"
            )
        if self.cfg.budget.export_hf and self.primary:
            target = Path(self.cfg.budget.export_hf)
            prepare_output(target, overwrite=is_jaxslm_export(target))

    def _rows_per_process(self) -> bool:
        """Whether each process feeds only its own rows of a batch (data.shard_by=records)."""
        return self.cfg.data.shard_by == "records"

    def _fresh_state(self) -> dict:
        model_cfg, seed = self.plan.model, self.cfg.seed
        if self.plan.init_dir is None:
            build = lambda: scratch_state(model_cfg, seed, self.optimizer)  # noqa: E731
            return jax.jit(build, out_shardings=self.shardings)()
        params = restore_params(
            self.plan.init_dir, model_cfg, param_shardings(self.mesh, model_cfg)
        )
        start = jax.jit(
            lambda p: init_state(p, self.optimizer),
            out_shardings=self.shardings,
            donate_argnums=0,
        )
        return start(params)

    def _abstract_state(self) -> dict:
        abstract = jax.eval_shape(lambda: scratch_state(self.plan.model, 0, self.optimizer))
        return jax.tree.map(
            lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
            abstract,
            self.shardings,
        )

    def _write_run_files(self) -> None:
        """Resolved config, corpus fingerprint, model metadata and tokenizer, so the run dir
        loads as a model (and a resume can tell what changed)."""
        if not self.primary:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(self.cfg, self.run_dir / CONFIG_FILE)
        fingerprint = json.dumps(self.corpus_fingerprint, indent=2) + "\n"
        atomic_write_text(self.run_dir / CORPUS_FINGERPRINT_FILE, fingerprint)
        source = {"run": self.cfg.name, "init": self.cfg.model.init}
        write_metadata(self.run_dir, self.plan.model, self.plan.vocab, source)
        tokenizer_dir = self.run_dir / TOKENIZER_DIR
        if not tokenizer_dir.exists():
            with atomic_directory(tokenizer_dir) as staging:
                save_tokenizer(self.plan, staging)

    def _check_resumable(self) -> None:
        """A resumed run must train the same model on the same data from the same seed (budgets
        may change, and so may how the model runs: RUNTIME_KEYS)."""
        saved_path = self.run_dir / CONFIG_FILE
        if not saved_path.is_file():
            return
        saved = load_config(saved_path)
        changed = [
            f"{section}.{key}: {vars(getattr(saved, section))[key]!r} there, {value!r} here"
            for section in RESUME_SECTIONS
            for key, value in vars(getattr(self.cfg, section)).items()
            if vars(getattr(saved, section))[key] != value
            and f"{section}.{key}" not in RUNTIME_KEYS
        ]
        changed += [
            f"{key}: {getattr(saved, key)!r} there, {getattr(self.cfg, key)!r} here"
            for key in RESUME_KEYS
            if getattr(saved, key) != getattr(self.cfg, key)
        ]
        if changed:
            raise JaxslmError(
                f"{self.run_dir} holds a run that this config does not continue "
                f"({'; '.join(changed)}); resume with the run's values or choose a new "
                "run_dir=PATH"
            )
        self._check_corpus_unchanged()
        if _rates_differ(saved, self.cfg) and self.primary:
            warnings.warn(
                f"the budget changed from {saved.total_steps} to {self.cfg.total_steps} steps: "
                "the learning-rate schedule's warmup and decay now span the new budget, so the "
                "resumed rates differ from the first run's",
                stacklevel=2,
            )

    @functools.cached_property
    def corpus_fingerprint(self) -> dict[str, str]:
        """The corpus's fingerprint, listed once per run (a resume checks it, then keeps it)."""
        return self.plan.corpus.fingerprint()

    def _check_corpus_unchanged(self) -> None:
        """Refuse a resume whose corpus changed since the run started (runs from before the
        fingerprint was kept are not checked)."""
        path = self.run_dir / CORPUS_FINGERPRINT_FILE
        if not path.is_file():
            return
        saved = json.loads(path.read_text())
        current = self.corpus_fingerprint
        changed = [FINGERPRINT_PARTS[k] for k in FINGERPRINT_PARTS if saved.get(k) != current[k]]
        if changed:
            raise JaxslmError(
                f"data.corpus={self.plan.corpus.directory} changed since {self.run_dir} started "
                f"(its {', '.join(changed)} differ from {path}); resume with the corpus the run "
                "started with, or choose a new run_dir=PATH"
            )

    def run(self) -> dict[str, Any]:
        """Train until the budget, a SIGTERM or the wall-clock limit; returns a summary."""
        try:
            with jax.set_mesh(self.mesh):
                return self._run()
        finally:
            self.lock.release()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.checkpoints.latest_step() is not None:
            self._check_resumable()
        self._prepare()
        data = self.batches.iterator("train", None)
        # the checkpoint is read first: a refused resume leaves the run's files as they were
        state, start_step, stream_state = self._start(data)
        self._write_run_files()
        held_out = self._held_out() if cfg.eval.every_steps else None
        tasks = TaskEvaluator(cfg, self.plan, self.mesh) if cfg.eval.tasks else None
        log = MetricsLog(
            self.run_dir,
            start_step,
            self.total_steps or start_step,
            tensorboard=cfg.logging.tensorboard,
            progress_bar=cfg.logging.progress_bar,
            primary=self.primary,
        )
        stream_tokens = self._stream_tokens()
        if stream_tokens is not None and stream_state is not None:
            stream_tokens.set_state(stream_state)
        throughput = Throughput.of_run(cfg, self.plan.model, start_step)
        reporter = StepReporter(cfg, log, throughput, stream_tokens, self._step_summary)
        checkpointing = Checkpointing(cfg, self.checkpoints, data, reporter, start_step)
        hooks = [h for h in (held_out, tasks) if h is not None] + [checkpointing]
        stop = StopRequests(cfg.budget.max_seconds)
        if tasks is not None:
            tasks.interrupted = stop.signalled_here
        try:
            state, step, reason = self._steps(state, start_step, data, hooks, reporter, stop)
            reporter.flush()
            if stream_tokens is not None:
                log.message(stream_tokens.run_summary())
            if tasks is not None and tasks.summaries:
                log.message(f"benchmarks at step {tasks.step}:\n{format_table(tasks.summaries)}")
            checkpointing.save_unsaved(step, state, self.last_results.get("eval_loss"))
            log.message(
                f"stopped at step {step}: {reason}; checkpoint in {self.checkpoints.directory}"
            )
        finally:
            stop.restore()
            self.checkpoints.close()
            log.close()
        if cfg.budget.export_hf and self.primary:
            from jaxslm.hf.exporter import export_hf

            export_hf(self.run_dir, cfg.budget.export_hf, overwrite=True)
        losses = reporter.losses
        return {"start_step": start_step, "losses": losses, "end_step": step, "stopped": reason}

    def _start(self, data) -> tuple[dict, int, dict | None]:
        """(train state, step, stream counts) from the newest intact checkpoint, whose data
        position `data` takes, or fresh at step 0 (no counts)."""
        restored = self.checkpoints.restore_latest(self._abstract_state())
        if restored is None:
            return self._fresh_state(), 0, None
        step, state, data_state = restored
        stream_state = data_state.pop(STREAM_TOKENS_KEY, None)
        data.set_state(data_state)
        return state, step, stream_state

    def _steps(
        self, state: dict, step: int, data, hooks: list[Hook], reporter: StepReporter, stop
    ) -> tuple[dict, int, str]:
        """Train until a stop condition: after each step, the hooks that are due, in order
        (their time is left out of the throughput; none after a signal, see
        StopRequests.signalled_here). Returns (state, step, why it stopped);
        `last_results` keeps the last step's record (its eval_loss ranks the final save)."""
        train_step = self._compiled_step()
        self.last_results: dict[str, float] = {}
        while (reason := stop.reason(step, self.total_steps)) is None:
            try:
                local = next(data)
            except StopIteration:
                return state, step, "the data ran out"
            state, metrics = train_step(state, self.batches.place(local))
            step += 1
            results = self.last_results = reporter.add(step, metrics, local)
            with reporter.throughput.paused():
                for hook in hooks:
                    if hook.due(step) and not stop.signalled_here():
                        hook.run(step, state, results)
        return state, step, reason


def schedule_shape(cfg: TrainConfig) -> tuple[int, int, str]:
    """(horizon, warmup steps, decay) of the run's learning-rate schedule; a run bounded by
    time alone has no step count to decay over or take a fraction of."""
    sched, total = cfg.schedule, cfg.total_steps
    if not total:
        return sched.warmup_steps, sched.warmup_steps, "constant"
    return total, sched.warmup(total), sched.decay


def _rates_differ(saved: TrainConfig, cfg: TrainConfig) -> bool:
    """Whether `cfg`'s schedule gives other rates than `saved`'s (a constant schedule's horizon
    changes none)."""

    def rates(config: TrainConfig) -> tuple:
        horizon, warmup, decay = schedule_shape(config)
        return (None if decay == "constant" else horizon, warmup, decay)

    return rates(saved) != rates(cfg)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) the run `cfg` describes (its `objective`); returns a summary of the
    losses."""
    if cfg.objective == "dpo":
        from jaxslm.training.dpo_trainer import DpoTrainer

        return DpoTrainer(cfg).run()
    return Trainer(cfg).run()
