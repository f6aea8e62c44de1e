"""The run's batches: Grain pipelines over the corpus, and their host rows placed on the mesh
as global arrays."""

from __future__ import annotations

import itertools

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxslm.config import TrainConfig
from jaxslm.data.pipeline import empty_rows, make_pipeline
from jaxslm.sharding import BATCH_AXES, place, place_local
from jaxslm.training.placement import batch_sharding
from jaxslm.training.setup import RunPlan, pipeline_config

Batch = dict[str, jax.Array]


class BatchSource:
    """Batches of [data.batch_size, data.seq_len]: with `data.shard_by: rows` every process
    reads every row of a batch (and keeps its own shards of them), otherwise each process
    reads its own records into its own rows."""

    def __init__(self, cfg: TrainConfig, plan: RunPlan, mesh: Mesh):
        self.cfg, self.plan, self.mesh = cfg, plan, mesh
        self.rows_mode = cfg.data.shard_by == "rows"
        self.rows = cfg.data.batch_size
        self.sharding = batch_sharding(mesh, (cfg.data.batch_size, cfg.data.seq_len))

    def iterator(self, split: str, num_epochs: int | None):
        """This process's host batches of `split` (None epochs: endless); the iterator's
        `get_state` / `set_state` save and restore its position."""
        config = pipeline_config(self.cfg, split, num_epochs)
        index, count = (0, 1) if self.rows_mode else (jax.process_index(), jax.process_count())
        plan = self.plan
        return iter(make_pipeline(plan.corpus, plan.tokenizer, plan.vocab, config, index, count))

    def place(self, local: dict[str, np.ndarray]) -> Batch:
        """This process's host batch as global arrays on the mesh."""
        if self.rows_mode:
            return {name: place(rows, BATCH_AXES, self.mesh) for name, rows in local.items()}
        return {
            name: place_local(rows, BATCH_AXES, self.mesh, self.rows)
            for name, rows in local.items()
        }

    def first(self, split: str, count: int) -> list[Batch]:
        """The first `count` batches of one pass over `split` (fewer if it holds fewer), on
        the mesh. Processes reading their own records may run out at different batches: they
        agree on the most any of them has, the others adding rows of padding (no targets), so
        every process runs the same sharded steps."""
        local = list(itertools.islice(self.iterator(split, 1), count))
        if not self.rows_mode and jax.process_count() > 1:
            most = int(np.max(multihost_utils.process_allgather(np.int32(len(local)))))
            rows = self.rows // jax.process_count()
            local += [empty_rows(rows, self.cfg.data.seq_len)] * (most - len(local))
        return [self.place(batch) for batch in local]
