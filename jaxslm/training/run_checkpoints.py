"""Checkpoints of a training run: an Orbax CheckpointManager under RUN_DIR/checkpoints.

Each step directory holds the items
  params   the decoder parameters (the same layout as a model checkpoint's params/)
  train    optimizer state and step counters
  data     the data iterator's state: one JSON for the run (`shard_by: rows`, every process
           reads the same stream) or one file per process (`shard_by: records`)
Keeps the latest `keep` checkpoints plus the one with the best held-out loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grain
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from jaxslm.checkpoint import RUN_CHECKPOINTS_DIR
from jaxslm.errors import JaxslmError

BEST_METRIC = "eval_loss"


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
        metrics = None if eval_loss is None else {BEST_METRIC: eval_loss}
        self.manager.save(step, args=args, metrics=metrics, force=True)

    def _data_save(self, data_state: dict):
        if self.per_process_data:
            return grain.checkpoint.CheckpointSave(FrozenIteratorState(data_state))
        return ocp.args.JsonSave(data_state)

    def restore(self, step: int, abstract_state: dict) -> tuple[dict, dict]:
        """The train state (placed as `abstract_state`'s shardings say) and the data state."""
        train = {k: v for k, v in abstract_state.items() if k != "params"}
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
            restored = self.manager.restore(step, args=args)
        except ValueError as error:
            raise JaxslmError(
                f"{self.directory / str(step)}: cannot restore the data iterator ({error}); a run "
                "with data.shard_by=records must resume on the same number of processes "
                "(use data.shard_by=rows for runs that change host count)"
            ) from error
        data_state = restored["data"]
        if self.per_process_data:
            data_state = data_state.state
        return {"params": restored["params"], **restored["train"]}, data_state

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
