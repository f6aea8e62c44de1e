"""Where the train state and the batches live on the mesh: NamedShardings from the logical
rules."""

from __future__ import annotations

import jax
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxslm.model_dir import abstract_params
from jaxslm.models.decoder import abstract_decoder, param_axes
from jaxslm.models.model_config import ModelConfig
from jaxslm.sharding import BATCH_AXES, named_sharding, tree_shardings


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
    return named_sharding(mesh, BATCH_AXES, global_shape)
