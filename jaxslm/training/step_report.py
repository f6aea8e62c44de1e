"""What the host learns of each train step: the non-finite guard, the step's losses, and the
logged record with throughput (tokens/s, MFU) and the realised stream shares."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from jaxslm.config import TrainConfig
from jaxslm.errors import JaxslmError
from jaxslm.models.model_config import ModelConfig
from jaxslm.scaling.flops import peak_flops_per_device, train_flops
from jaxslm.training.loss import mean_losses
from jaxslm.training.metrics_log import MetricsLog
from jaxslm.training.stream_mix import StreamTokens


class Throughput:
    """Tokens per second and MFU over the steps since the last measurement, leaving out the
    time spent `paused` (evaluations and checkpoint saves)."""

    def __init__(
        self, tokens_per_step: int, flops_per_step: float, peak_total: float | None, step: int
    ):
        """`peak_total`: the FLOP/s of all devices together (None: no MFU); `step`: the step
        the first measurement starts from."""
        self.tokens_per_step, self.flops_per_step = tokens_per_step, flops_per_step
        self.peak_total = peak_total
        self.last = (time.perf_counter(), step)
        self.excluded = 0.0
        self.paused_at: float | None = None

    @classmethod
    def of_run(cls, cfg: TrainConfig, model: ModelConfig, step: int) -> Throughput:
        """The throughput of the run `cfg` training `model` from `step` on these devices
        (`logging.peak_flops`, else the device kind's peak, for MFU). DPO with a frozen
        reference adds its forward pass, a third of a training step (MaxText's convention)."""
        flops_per_step = train_flops(model, cfg.data.batch_size, cfg.data.seq_len)
        if cfg.objective == "dpo" and cfg.dpo.reference == "frozen":
            flops_per_step *= 4 / 3
        device = jax.devices()[0]
        peak = cfg.logging.peak_flops or peak_flops_per_device(device.device_kind, model.dtype)
        peak_total = None if peak is None else peak * jax.device_count()
        return cls(cfg.tokens_per_step, flops_per_step, peak_total, step)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Leave the time spent inside out of the measurements."""
        self.paused_at = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - self.paused_at
            self.paused_at = None

    def measure(self, step: int) -> dict[str, float | None]:
        """`tokens_per_second` and `mfu` since the previous measurement (a measurement while
        paused leaves out the pause so far; the rest counts against the next one)."""
        now = time.perf_counter()
        if self.paused_at is not None:
            self.excluded += now - self.paused_at
            self.paused_at = now
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


def lm_summary(metrics: dict) -> dict[str, float]:
    """The language-model step's record fields: `loss`, `loss_<modality>`, `loss_tokens`."""
    return {**mean_losses(metrics), "loss_tokens": int(metrics["count"])}


class StepReporter:
    """Looks at each step on the host one step late, so that the next step is queued before
    the host waits for this one. A step's record is logged every `logging.every_steps`, at
    the last step, and at any step whose `results` (what the hooks measured) are not empty.

    `summary(metrics)` gives the objective's record fields (with `loss`); `stream_tokens`
    (None: not counted) the realised stream shares."""

    def __init__(
        self,
        cfg: TrainConfig,
        log: MetricsLog,
        throughput: Throughput,
        stream_tokens: StreamTokens | None,
        summary: Callable[[dict], dict[str, float]] = lm_summary,
    ):
        self.cfg, self.log = cfg, log
        self.throughput, self.stream_tokens = throughput, stream_tokens
        self.summary = summary
        self.total_steps = cfg.total_steps
        self.losses: dict[int, float] = {}
        self.pending: tuple[int, Any, dict[str, float]] | None = None

    def add(self, step: int, metrics, local: dict[str, np.ndarray]) -> dict[str, float]:
        """Take `step` just queued (its device `metrics`, this process's host batch `local`)
        and report the step before it. Returns the step's results, for the hooks to fill."""
        self.flush()
        if self.stream_tokens is not None:
            self.stream_tokens.add(local)
        results: dict[str, float] = {}
        self.pending = (step, metrics, results)
        self.log.advance()
        return results

    def flush(self) -> None:
        """Report the pending step now: the non-finite guard, its loss and its record."""
        if self.pending is None:
            return
        (step, metrics, results), self.pending = self.pending, None
        metrics = jax.device_get(metrics)
        limit = self.cfg.optimizer.max_nonfinite_steps
        if int(metrics["streak"]) > limit:
            raise JaxslmError(
                f"step {step}: {int(metrics['streak'])} steps in a row had non-finite gradients "
                f"(more than optimizer.max_nonfinite_steps={limit}); lower optimizer.lr or "
                "check the data, then resume from the last checkpoint"
            )
        losses = self.summary(metrics)
        self.losses[step] = losses["loss"]
        if step % self.cfg.logging.every_steps and step != self.total_steps and not results:
            return
        record = {"step": step, **losses, "tokens": step * self.cfg.tokens_per_step, **results}
        record.update(
            grad_norm=float(metrics["grad_norm"]),
            lr=float(metrics["lr"]),
            skipped_steps=int(metrics["skipped"]),
        )
        if self.stream_tokens is not None:
            record.update(self.stream_tokens.window_shares())
        record.update(self.throughput.measure(step))
        self.log.write(record)

    def sync(self) -> None:
        """Report the pending step and put every record on disk (before a checkpoint)."""
        self.flush()
        self.log.sync()
