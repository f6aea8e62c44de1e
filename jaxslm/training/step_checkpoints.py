"""A training run's step checkpoints: an Orbax CheckpointManager under RUN_DIR/checkpoints
(a model checkpoint directory is jaxslm.model_dir).

Each step directory holds the items
  params   the decoder parameters (the same layout as a model checkpoint's params/)
  train    optimizer state and step counters
  data     the data iterator's state: one JSON for the run (`shard_by: rows`, every process
           reads the same stream) or one file per process (`shard_by: records`)
Keeps the latest `keep` checkpoints plus the one with the best held-out loss. A resume reads
the newest intact checkpoint and moves damaged newer ones to RUN_DIR/damaged_checkpoints/; a
checkpoint whose shapes do not fit the run's model is refused instead, and nothing is moved.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from jaxslm.checkpoint_fallback import DamagedCheckpoint, check_fits, newest_intact, reading
from jaxslm.errors import JaxslmError
from jaxslm.model_dir import RUN_CHECKPOINTS_DIR

BEST_METRIC = "eval_loss"


class _NoMissingMetricNotice(logging.Filter):
    """Drops Orbax's warning for each checkpoint saved without a held-out loss: with
    `keep_best`, most are (every save between evaluations), and the warning would repeat."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoMissingMetricNotice())
DATA_ITEM = "data"  # the item (and folder) of the data-iterator state
DAMAGED_DIR = "damaged_checkpoints"
MISMATCH_HINT = (
    "the model or the corpus changed since this checkpoint was saved (a corpus with another "
    "number of speech units changes the vocabulary, and so the embedding's rows): resume with "
    "the original model and corpus, or start a new run with another run_dir=PATH"
)


class FrozenIteratorState:
    """A data-iterator state captured at a step, saved by Grain's per-process handler."""

    def __init__(self, state: dict[str, Any] | None = None):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state).encode()

    def set_state(self, state: bytes) -> None:
        self.state = json.loads(state)

    def start_prefetch(self) -> None:
        """Called by Grain's handler after a restore; nothing to start."""


class RunCheckpoints:
    """Save and restore train state + data state by step."""

    def __init__(
        self, run_dir: Path, keep: int, keep_best: bool, async_save: bool, per_process_data: bool
    ):
        self.directory = Path(run_dir).absolute() / RUN_CHECKPOINTS_DIR
        self.per_process_data = per_process_data
        keep_policies: list = [policies.LatestN(n=keep)]
        if keep_best:
            keep_policies.append(
                policies.BestN(
                    get_metric_fn=lambda metrics: metrics[BEST_METRIC],
                    reverse=True,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep_policies),
            # with a best_fn Orbax also writes each step's metrics to disk, so that a resumed
            # run still knows which checkpoint is the best
            best_fn=(lambda metrics: metrics[BEST_METRIC]) if keep_best else None,
            best_mode="min",
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def save(
        self, step: int, state: dict, data_state: dict, eval_loss: float | None = None
    ) -> None:
        """Start saving (asynchronously when configured); returns once arrays are copied."""
        train = {k: v for k, v in state.items() if k != "params"}
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(state["params"]),
            train=ocp.args.StandardSave(train),
            data=self._data_save(data_state),
        )
        # a NaN loss would sort anywhere among the others: such a step is never the best
        ranked = eval_loss is not None and math.isfinite(eval_loss)
        metrics = {BEST_METRIC: eval_loss} if ranked else None
        self.manager.save(step, args=args, metrics=metrics, force=True)

    def _data_save(self, data_state: dict):
        if self.per_process_data:
            return grain.checkpoint.CheckpointSave(FrozenIteratorState(data_state))
        return ocp.args.JsonSave(data_state)

    def restore_latest(self, abstract_state: dict) -> tuple[int, dict, dict] | None:
        """The newest intact checkpoint: its step, train state (placed as `abstract_state`'s
        shardings say) and data state; None when there is no checkpoint. Damaged newer ones
        are moved to RUN_DIR/damaged_checkpoints/ with a warning (see checkpoint_fallback)."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            return None
        candidates = [self.directory / str(step) for step in steps]
        chosen, (state, data_state) = newest_intact(
            candidates, lambda step_dir: self.restore(int(step_dir.name), abstract_state)
        )
        step = int(chosen.name)
        self._set_aside([path for path in candidates if int(path.name) > step])
        return step, state, data_state

    def restore(self, step: int, abstract_state: dict) -> tuple[dict, dict]:
        """The train state (placed as `abstract_state`'s shardings say) and the data state of
        checkpoint `step`; DamagedCheckpoint when it cannot be read, JaxslmError when its
        shapes do not fit `abstract_state` (a changed model or vocabulary)."""
        train = {k: v for k, v in abstract_state.items() if k != "params"}
        step_dir = self.directory / str(step)
        self._check_data_processes(step_dir)
        data = (
            grain.checkpoint.CheckpointRestore(FrozenIteratorState())
            if self.per_process_data
            else ocp.args.JsonRestore()
        )
        args = ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_state["params"]),
            train=ocp.args.StandardRestore(train),
            data=data,
        )
        try:
            with reading(step_dir):
                targets = {step_dir / "params": abstract_state["params"], step_dir / "train": train}
                check_fits(targets, MISMATCH_HINT)
                restored = self.manager.restore(step, args=args)
        except DamagedCheckpoint as damage:
            if jax.process_count() == 1:
                raise
            # Only the processes that read the damaged file fail here: they cannot agree with
            # the others on an older checkpoint.
            raise JaxslmError(
                f"{step_dir} is damaged: {damage}; move it out of {self.directory} and rerun "
                "to resume from the previous checkpoint"
            ) from None
        data_state = restored["data"]
        if self.per_process_data:
            data_state = data_state.state
        return {"params": restored["params"], **restored["train"]}, data_state

    def _check_data_processes(self, step_dir: Path) -> None:
        """Refuse a `shard_by: records` checkpoint written by another number of processes."""
        data_dir = step_dir / DATA_ITEM
        saved = sorted(p.name for p in data_dir.glob("process_*-of-*.json"))
        mine = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if self.per_process_data and saved and mine not in saved:
            raise JaxslmError(
                f"{data_dir} holds the data iterators of another number of processes "
                f"({', '.join(saved)}); a run with data.shard_by=records must resume on the "
                "same number of processes (use data.shard_by=rows for runs that change host "
                "count)"
            )

    def _set_aside(self, damaged: list[Path]) -> None:
        """Move damaged checkpoints to RUN_DIR/damaged_checkpoints/ (the primary process), so
        that the resumed run can save those steps again."""
        if not damaged:
            return
        aside = self.directory.parent / DAMAGED_DIR
        if jax.process_index() == 0:
            aside.mkdir(exist_ok=True)
            for path in damaged:
                target = aside / path.name
                suffix = 1
                while target.exists():
                    target, suffix = aside / f"{path.name}-{suffix}", suffix + 1
                path.rename(target)
                warnings.warn(f"moved the damaged checkpoint {path} to {target}", stacklevel=3)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("jaxslm: damaged checkpoints set aside")
        self.manager.reload()

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
