"""Multi-host start-up: `jax.distributed.initialize` from the config or the cluster's
environment (SLURM, Open MPI, or JAX_COORDINATOR_ADDRESS)."""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxslm.config import MeshSection

CLUSTER_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE")


def initialize(mesh: MeshSection) -> None:
    """Join the process group when the config or the environment describes one; otherwise a
    single-process run. Must run before anything asks jax for devices."""
    explicit = mesh.coordinator_address is not None
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if not (explicit or slurm or any(v in os.environ for v in CLUSTER_VARIABLES)):
        return
    # CPU processes exchange collectives over gloo; accelerators ignore this option.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(mesh.coordinator_address, mesh.num_processes, mesh.process_id)
    else:
        jax.distributed.initialize()


def from_primary(flag: bool) -> bool:
    """Process 0's `flag`, on every process (a collective when there are several)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))
