"""What the train loop does between steps: hooks that run when they are due (held-out loss,
the benchmarks of `eval.tasks` in jaxslm.training.task_eval, checkpoints), in the order the
trainer lists them, and the reasons to stop (step budget, wall clock, SIGTERM)."""

from __future__ import annotations

import signal
import time
from typing import Protocol

import jax
from flax import nnx

from jaxslm.config import TrainConfig
from jaxslm.training.batches import BatchSource
from jaxslm.training.distributed import FlagExchange
from jaxslm.training.loss import mean_losses
from jaxslm.training.step import make_eval_step
from jaxslm.training.step_checkpoints import RunCheckpoints
from jaxslm.training.step_report import StepReporter

# the data state's key for the stream counts of the records (jaxslm.training.stream_mix)
STREAM_TOKENS_KEY = "stream_tokens"


class Hook(Protocol):
    """An action of the train loop after the steps it is due at."""

    def due(self, step: int) -> bool:
        """Whether to run after `step`."""

    def run(self, step: int, state: dict, results: dict[str, float]) -> None:
        """Act on the train `state` after `step`; metrics go into `results` (the step's
        logged record)."""


class HeldOut:
    """Every `eval.every_steps` steps: the held-out losses over the first `eval.batches`
    batches of `eval.split` (read once), `eval_loss` and `eval_loss_<modality>`."""

    def __init__(
        self, cfg: TrainConfig, batches: BatchSource, graphdef: nnx.GraphDef, param_shardings
    ):
        self.every = cfg.eval.every_steps
        self.batches = batches.first(cfg.eval.split, cfg.eval.batches)
        self.step = jax.jit(
            make_eval_step(graphdef), in_shardings=(param_shardings, batches.sharding)
        )

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def run(self, step: int, state: dict, results: dict[str, float]) -> None:
        results.update(self.losses(state["params"]))

    def losses(self, params: dict) -> dict[str, float]:
        """Mean held-out losses: `eval_loss` and `eval_loss_<modality>`."""
        totals = None
        for batch in self.batches:
            sums = self.step(params, batch)
            totals = sums if totals is None else jax.tree.map(jax.numpy.add, totals, sums)
        return {f"eval_{k}": v for k, v in mean_losses(jax.device_get(totals)).items()}


class Checkpointing:
    """Every `checkpoint.every_steps` steps, and at the end of the run: the train state and the
    data iterator's position. A checkpoint commits only after its step's record is on disk."""

    def __init__(
        self,
        cfg: TrainConfig,
        checkpoints: RunCheckpoints,
        data,
        reporter: StepReporter,
        step: int,
    ):
        """`data`: the train iterator; `step`: the step the run starts from (saved already)."""
        self.every = cfg.checkpoint.every_steps
        self.checkpoints, self.data, self.reporter = checkpoints, data, reporter
        self.saved_step = step

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def run(self, step: int, state: dict, results: dict[str, float]) -> None:
        self.save(step, state, results.get("eval_loss"))

    def save(self, step: int, state: dict, eval_loss: float | None = None) -> None:
        """Write the records up to `step`, then its checkpoint (`eval_loss` ranks it for
        `checkpoint.keep_best`)."""
        self.reporter.sync()
        data_state = self.data.get_state()
        if self.reporter.stream_tokens is not None:
            data_state = {**data_state, STREAM_TOKENS_KEY: self.reporter.stream_tokens.state()}
        self.checkpoints.save(step, state, data_state, eval_loss)
        self.saved_step = step

    def save_unsaved(self, step: int, state: dict, eval_loss: float | None = None) -> None:
        """Save `step` unless its checkpoint exists (the end of the run), ranked by its
        `eval_loss` when the step was evaluated."""
        if step != self.saved_step:
            self.save(step, state, eval_loss)


class StopRequests:
    """Why the run should stop now: the step budget, the wall clock, SIGTERM or Ctrl-C (a
    second Ctrl-C interrupts at once, without the checkpoint).

    With several processes, all stop after the same step, whichever of them a SIGTERM
    reaches and whenever their clocks pass the deadline: at each step they exchange their
    SIGTERM flags and process 0's clock (distributed.FlagExchange, one step late, so the loop
    keeps a step queued), and stop when any process was signalled or process 0's time is
    up. A single process exchanges nothing."""

    def __init__(self, max_seconds: float | None):
        self.deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.terminated = False
        self.signal_name = "SIGTERM"
        self.flags = FlagExchange() if jax.process_count() > 1 else None
        self.previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }

    def _on_signal(self, signum, frame) -> None:
        self.terminated = True
        if signum == signal.SIGINT:
            self.signal_name = "Ctrl-C"
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def signalled_here(self) -> bool:
        """Whether a single-process run has been signalled: the end-of-step work (held-out
        loss, benchmarks) is then cut short so that the checkpoint is saved at once. With
        several processes each finishes it, as they must run the same sharded steps."""
        return self.flags is None and self.terminated

    def reason(self, step: int, total_steps: int | None) -> str | None:
        terminated, late = self._requests()
        if terminated:
            return f"{self.signal_name} (checkpoint saved before exit)"
        if total_steps is not None and step >= total_steps:
            return f"the budget of {total_steps} steps is reached"
        if late:
            return "the wall-clock budget budget.max_seconds is spent"
        return None

    def _requests(self) -> tuple[bool, bool]:
        """(a SIGTERM arrived, the deadline passed): this process's, or with several
        processes, what they all agree on (any SIGTERM, process 0's deadline)."""
        late = self.deadline is not None and time.monotonic() >= self.deadline
        if self.flags is None:
            return self.terminated, late
        table = self.flags.exchange([self.terminated, late])
        if table is None:
            return False, False
        return bool(table[:, 0].any()), bool(table[0, 1])

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
