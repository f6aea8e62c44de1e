"""Where the train state and the batches live on the mesh: NamedShardings from the logical
rules, and per-process batch shards assembled into global arrays."""

from __future__ import annotations

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxslm.model_dir import abstract_params
from jaxslm.models.decoder import abstract_decoder, param_axes
from jaxslm.models.model_config import ModelConfig
from jaxslm.sharding import logical_spec, tree_shardings

BATCH_AXES = ("batch", "length")


def param_shardings(mesh: Mesh, cfg: ModelConfig) -> dict:
    """NamedShardings of the decoder's parameters by their logical axes."""
    shapes = jax.tree.map(lambda leaf: leaf.shape, abstract_params(cfg))
    return tree_shardings(mesh, param_axes(abstract_decoder(cfg)), shapes)


def state_shardings(mesh: Mesh, cfg: ModelConfig, optimizer: optax.GradientTransformation):
    """Shardings of the whole train state: optimizer moments follow their parameters, scalars
    are replicated."""
    params = param_shardings(mesh, cfg)
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract_opt = jax.eval_shape(optimizer.init, abstract_params(cfg))
    opt_state = optax.tree_map_params(
        optimizer,
        lambda _, sharding: sharding,
        abstract_opt,
        params,
        transform_non_params=lambda _: replicated,
    )
    scalars = {"step": replicated, "skipped": replicated, "streak": replicated}
    return {"params": params, "opt_state": opt_state, **scalars}


def batch_sharding(mesh: Mesh, global_shape: tuple[int, int]) -> NamedSharding:
    """Rows spread over the data and fsdp axes, the sequence whole."""
    return NamedSharding(mesh, logical_spec(BATCH_AXES, global_shape, mesh))


def global_batch(
    local: dict[str, np.ndarray], mesh: Mesh, global_rows: int
) -> dict[str, jax.Array]:
    """This process's rows of every batch field assembled into global sharded arrays."""
    arrays = {}
    for name, rows in local.items():
        shape = (global_rows, *rows.shape[1:])
        sharding = batch_sharding(mesh, shape)
        arrays[name] = jax.make_array_from_process_local_data(sharding, rows, shape)
    return arrays
