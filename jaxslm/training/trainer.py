"""The training run: state on the mesh, the data iterator, the step loop, held-out loss,
checkpoints, logs and stop conditions (budget, wall clock, SIGTERM).

A run resumes by itself: when RUN_DIR/checkpoints holds a checkpoint, training continues from
the newest intact one (model, optimizer, step and data iterator). One process at a time trains
in a run directory (RUN_DIR/run.lock).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxslm import backend
from jaxslm.config import TrainConfig, dump_config, load_config
from jaxslm.data.pipeline import make_pipeline
from jaxslm.errors import JaxslmError
from jaxslm.evals.runner import format_table
from jaxslm.model_dir import TOKENIZER_DIR, restore_params, write_metadata
from jaxslm.models.decoder import abstract_decoder
from jaxslm.scaling.flops import peak_flops_per_device, train_flops
from jaxslm.sharding import make_mesh
from jaxslm.training import distributed
from jaxslm.training.loss import mean_losses
from jaxslm.training.metrics_log import MetricsLog
from jaxslm.training.optimizer import learning_rate_schedule, make_optimizer
from jaxslm.training.placement import batch_sharding, param_shardings, state_shardings
from jaxslm.training.run_lock import lock_run_dir
from jaxslm.training.setup import pipeline_config, plan_run, save_tokenizer
from jaxslm.training.step import init_state, make_eval_step, make_train_step, scratch_state
from jaxslm.training.step_checkpoints import RunCheckpoints
from jaxslm.training.stream_mix import StreamTokens
from jaxslm.training.task_eval import TaskEvaluator

CONFIG_FILE = "config.yaml"
RESUME_SECTIONS = ("model", "vocab", "data")
# Top-level keys a resumed run keeps: initialisation and interleaving derive from the seed.
RESUME_KEYS = ("seed",)
# Keys of RESUME_SECTIONS that change how a run computes, not what it trains: a resumed run may
# change them (another kernel or remat policy on another machine).
RUNTIME_KEYS = ("model.attention", "model.remat", "model.scan_layers")


class Trainer:
    """One run: state on the mesh, the data iterator, checkpoints and logs."""

    def __init__(self, cfg: TrainConfig):
        distributed.initialize(cfg.mesh)
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.primary = jax.process_index() == 0
        self.mesh = make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
        self._check_batch()
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
        opt, sched = cfg.optimizer, cfg.schedule
        horizon = self.total_steps or 1
        warmup = min(sched.warmup(horizon), horizon)
        decay = sched.decay if self.total_steps else "constant"
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
        global_shape = (cfg.data.batch_size, cfg.data.seq_len)
        self.batch_sharding = batch_sharding(self.mesh, global_shape)
        self.rows_mode = cfg.data.shard_by == "rows"
        self.stream_tokens = StreamTokens(gather=not self.rows_mode)
        self.eval_losses: dict[int, dict[str, float]] = {}
        self.checkpoints = RunCheckpoints(
            self.run_dir,
            keep=cfg.checkpoint.keep,
            keep_best=cfg.checkpoint.keep_best,
            async_save=cfg.checkpoint.async_save,
            per_process_data=not self.rows_mode,
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
        data = self.cfg.data
        data.check_batch_split(self.mesh.shape["data"] * self.mesh.shape["fsdp"])
        if data.batch_size % jax.process_count():
            raise JaxslmError(
                f"data.batch_size={data.batch_size} does not split over "
                f"{jax.process_count()} processes"
            )

    def _data_iterator(self, split: str, num_epochs: int | None):
        pc = pipeline_config(self.cfg, split, num_epochs)
        index, count = (0, 1) if self.rows_mode else (jax.process_index(), jax.process_count())
        pipeline = make_pipeline(
            self.plan.corpus, self.plan.tokenizer, self.plan.vocab, pc, index, count
        )
        return iter(pipeline)

    def _global(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Host rows -> global arrays on the mesh (all rows on each host in rows mode)."""
        shape = (self.cfg.data.batch_size, self.cfg.data.seq_len)
        sharding = self.batch_sharding
        if self.rows_mode:
            return {
                k: jax.make_array_from_callback(shape, sharding, lambda index, v=v: v[index])
                for k, v in local.items()
            }
        return {
            k: jax.make_array_from_process_local_data(sharding, v, shape) for k, v in local.items()
        }

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
        """Resolved config, model metadata and tokenizer, so the run dir loads as a model."""
        if not self.primary:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(self.cfg, self.run_dir / CONFIG_FILE)
        source = {"run": self.cfg.name, "init": self.cfg.model.init}
        write_metadata(self.run_dir, self.plan.model, self.plan.vocab, source)
        tokenizer_dir = self.run_dir / TOKENIZER_DIR
        if not tokenizer_dir.exists():
            save_tokenizer(self.plan, tokenizer_dir)

    def _check_resumable(self) -> None:
        """A resumed run must train the same model on the same data from the same seed (budgets
        may change, and so may how the model runs: RUNTIME_KEYS)."""
        saved_path = self.run_dir / CONFIG_FILE
        if not saved_path.is_file():
            return
        saved = load_config(saved_path)
        changed = [
            f"{section}.{key}"
            for section in RESUME_SECTIONS
            for key, value in vars(getattr(self.cfg, section)).items()
            if vars(getattr(saved, section))[key] != value
            and f"{section}.{key}" not in RUNTIME_KEYS
        ]
        changed += [key for key in RESUME_KEYS if getattr(saved, key) != getattr(self.cfg, key)]
        if changed:
            raise JaxslmError(
                f"{self.run_dir} holds a run whose {', '.join(changed)} differ from this config; "
                "resume with the same values or choose a new run_dir=PATH"
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
        self._write_run_files()
        data = self._data_iterator("train", None)
        restored = self.checkpoints.restore_latest(self._abstract_state())
        if restored is None:
            state, step = self._fresh_state(), 0
        else:
            step, state, data_state = restored
            data.set_state(data_state)
        train_step = jax.jit(
            make_train_step(self.graphdef, self.optimizer, self.schedule, cfg.data.micro_batches),
            in_shardings=(self.shardings, self.batch_sharding),
            out_shardings=(self.shardings, None),
            donate_argnums=0,
        )
        evaluator = HeldOut(self) if cfg.eval.every_steps else None
        tasks = TaskEvaluator(cfg, self.plan, self.mesh) if cfg.eval.tasks else None
        log = MetricsLog(
            self.run_dir,
            step,
            self.total_steps or step,
            tensorboard=cfg.logging.tensorboard,
            progress_bar=cfg.logging.progress_bar,
            primary=self.primary,
        )
        throughput = Throughput(self, step)
        stop = StopRequests(cfg.budget.max_seconds)
        summary: dict[str, Any] = {"start_step": step, "losses": {}}
        pending = None
        saved_step = step
        try:
            while (reason := stop.reason(step, self.total_steps)) is None:
                try:
                    local = next(data)
                except StopIteration:
                    reason = "the data ran out"
                    break
                state, metrics = train_step(state, self._global(local))
                step += 1
                if pending is not None:
                    self._report(pending, log, throughput, summary)
                self.stream_tokens.add(local)
                pending = (step, metrics)
                log.advance()
                paused = time.perf_counter()
                eval_loss = None
                if evaluator is not None and step % cfg.eval.every_steps == 0:
                    self.eval_losses[step] = evaluator.losses(state["params"])
                    eval_loss = self.eval_losses[step]["eval_loss"]
                if tasks is not None and self._tasks_due(step):
                    self.eval_losses.setdefault(step, {}).update(
                        tasks.metrics(state["params"], step)
                    )
                if step % cfg.checkpoint.every_steps == 0:
                    # A checkpoint commits only after its step's record is on disk.
                    throughput.exclude(time.perf_counter() - paused)
                    self._report(pending, log, throughput, summary)
                    pending, paused = None, time.perf_counter()
                    log.sync()
                    self.checkpoints.save(step, state, data.get_state(), eval_loss)
                    saved_step = step
                throughput.exclude(time.perf_counter() - paused)
            if pending is not None:
                self._report(pending, log, throughput, summary)
            log.message(self.stream_tokens.run_summary())
            if tasks is not None and tasks.summaries:
                log.message(f"benchmarks at step {tasks.step}:\n{format_table(tasks.summaries)}")
            if step != saved_step:
                log.sync()
                self.checkpoints.save(step, state, data.get_state())
            log.message(
                f"stopped at step {step}: {reason}; checkpoint in {self.checkpoints.directory}"
            )
        finally:
            stop.restore()
            self.checkpoints.close()
            log.close()
        summary.update(end_step=step, stopped=reason)
        if cfg.budget.export_hf and self.primary:
            from jaxslm.hf.exporter import export_hf

            export_hf(self.run_dir, cfg.budget.export_hf, overwrite=True)
        return summary

    def _tasks_due(self, step: int) -> bool:
        every = self.cfg.eval.tasks_every_steps
        return step == self.total_steps or (every > 0 and step % every == 0)

    def _report(self, pending, log: MetricsLog, throughput: Throughput, summary: dict) -> None:
        """Host-side look at a finished step: the non-finite guard and the logged record."""
        step, metrics = pending
        metrics = jax.device_get(metrics)
        if int(metrics["streak"]) > self.cfg.optimizer.max_nonfinite_steps:
            raise JaxslmError(
                f"step {step}: {int(metrics['streak'])} steps in a row had non-finite gradients "
                f"(more than optimizer.max_nonfinite_steps={self.cfg.optimizer.max_nonfinite_steps}"
                "); lower optimizer.lr or check the data, then resume from the last checkpoint"
            )
        losses = mean_losses(metrics)
        summary["losses"][step] = losses["loss"]
        held_out = self.eval_losses.pop(step, {})
        if step % self.cfg.logging.every_steps and step != self.total_steps and not held_out:
            return
        record = {"step": step, **losses, "tokens": step * self.cfg.tokens_per_step, **held_out}
        record.update(
            loss_tokens=int(metrics["count"]),
            grad_norm=float(metrics["grad_norm"]),
            lr=float(metrics["lr"]),
            skipped_steps=int(metrics["skipped"]),
            **self.stream_tokens.window_shares(),
            **throughput.measure(step),
        )
        log.write(record)


class HeldOut:
    """Held-out loss over the first `eval.batches` batches of `eval.split` (read once)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        cfg = trainer.cfg
        self.batches = []
        iterator = trainer._data_iterator(cfg.eval.split, 1)
        for _, local in zip(range(cfg.eval.batches), iterator, strict=False):
            self.batches.append(trainer._global(local))
        self.step = jax.jit(
            make_eval_step(trainer.graphdef),
            in_shardings=(trainer.shardings["params"], trainer.batch_sharding),
        )

    def losses(self, params: dict) -> dict[str, float]:
        """Mean held-out losses: `eval_loss` and `eval_loss_<modality>`."""
        totals = None
        for batch in self.batches:
            sums = self.step(params, batch)
            totals = sums if totals is None else jax.tree.map(jax.numpy.add, totals, sums)
        return {f"eval_{k}": v for k, v in mean_losses(jax.device_get(totals)).items()}


class Throughput:
    """Tokens per second and MFU over the steps since the last measurement, leaving out the
    time spent in evaluations and checkpoint saves."""

    def __init__(self, trainer: Trainer, step: int):
        cfg = trainer.cfg
        self.tokens_per_step = cfg.tokens_per_step
        self.flops_per_step = train_flops(trainer.plan.model, cfg.data.batch_size, cfg.data.seq_len)
        device = jax.devices()[0]
        peak = cfg.logging.peak_flops or peak_flops_per_device(
            device.device_kind, trainer.plan.model.dtype
        )
        self.peak_total = None if peak is None else peak * jax.device_count()
        self.last = (time.perf_counter(), step)
        self.excluded = 0.0

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (not spent training) out of the current measurement."""
        self.excluded += seconds

    def measure(self, step: int) -> dict[str, float | None]:
        now = time.perf_counter()
        then, last_step = self.last
        self.last = (now, step)
        seconds, steps = now - then - self.excluded, step - last_step
        self.excluded = 0.0
        if steps <= 0 or seconds <= 0:
            return {}
        flops_per_second = self.flops_per_step * steps / seconds
        return {
            "tokens_per_second": self.tokens_per_step * steps / seconds,
            "mfu": None if self.peak_total is None else flops_per_second / self.peak_total,
        }


class StopRequests:
    """Why the run should stop now: the step budget, the wall clock, or SIGTERM."""

    def __init__(self, max_seconds: float | None):
        self.deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.terminated = False
        self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        self.terminated = True

    def reason(self, step: int, total_steps: int | None) -> str | None:
        if self.terminated:
            return "SIGTERM (checkpoint saved before exit)"
        if total_steps is not None and step >= total_steps:
            return f"the budget of {total_steps} steps is reached"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "the wall-clock budget budget.max_seconds is spent"
        return None

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self.previous)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) the run `cfg` describes; returns a summary of the losses."""
    return Trainer(cfg).run()
