"""Multi-host start-up: `jax.distributed.initialize` from the config or the cluster's
environment (SLURM, Open MPI, or JAX_COORDINATOR_ADDRESS); and what the processes agree on."""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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


class FlagExchange:
    """Small integer flags of every process, gathered on the devices one call late, so that
    the host never waits for the step it has just queued: `exchange(flags)` starts gathering
    this process's `flags` and returns the [processes, len(flags)] table that the previous
    call started (None on the first call). Every process must call it at the same points and
    with as many flags."""

    def __init__(self):
        devices = np.asarray(jax.devices(), dtype=object).reshape(jax.process_count(), -1)
        self.mesh = Mesh(devices, ("processes", "local_devices"))
        self.rows = NamedSharding(self.mesh, PartitionSpec("processes"))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self.gather = jax.jit(lambda table: table, out_shardings=replicated)
        self.pending: jax.Array | None = None

    def exchange(self, flags: Sequence[int]) -> np.ndarray | None:
        local = np.asarray(flags, np.int32)[None]
        shape = (jax.process_count(), local.shape[1])
        with jax.set_mesh(self.mesh):
            table = self.gather(jax.make_array_from_process_local_data(self.rows, local, shape))
        previous, self.pending = self.pending, table
        return None if previous is None else np.asarray(previous.addressable_data(0))
