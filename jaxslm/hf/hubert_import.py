"""Load a HF HuBERT directory (`HubertModel` or `HubertForCTC`-style) as a HubertEncoder.

Weights come from `model.safetensors` (single or sharded), read tensor by tensor, or from
`pytorch_model.bin` through `torch.load(weights_only=True)`. The weight norm of the positional
convolution (`weight_g`/`weight_v` or `parametrizations.weight.original0/1`) is folded into a
plain kernel.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxslm.errors import JaxslmError
from jaxslm.hf.safetensors_io import INDEX_FILE, SINGLE_FILE, WeightStore
from jaxslm.models.hubert import HubertConfig, HubertEncoder, abstract_hubert

BIN_FILE = "pytorch_model.bin"
BIN_INDEX_FILE = "pytorch_model.bin.index.json"
CTC_PREFIX = "hubert."
POS_CONV = "encoder.pos_conv_embed.conv"
WEIGHT_NORM_KEYS = (
    ("weight_g", "weight_v"),
    ("parametrizations.weight.original0", "parametrizations.weight.original1"),
)


def load_hubert(directory: str | Path, dtype: str = "float32") -> HubertEncoder:
    """The encoder of a HF HuBERT directory, parameters and compute in `dtype`.

    Its configuration is `encoder.config`.
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    try:
        hf = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise JaxslmError(f"{config_path}: no readable HuBERT config.json ({err})") from err
    cfg = HubertConfig.from_hf(hf, str(config_path)).replace(param_dtype=dtype, dtype=dtype)
    cfg.check(str(config_path))
    weights = _TensorSource(directory)
    graphdef, state = nnx.split(abstract_hubert(cfg))
    plan = _plan(cfg, weights)
    for path, variable in nnx.to_flat_state(state):
        value = plan[path](weights.read)
        want = variable.get_value()
        if value.shape != want.shape:
            raise JaxslmError(
                f"{directory}: weights for {'.'.join(map(str, path))} have shape {value.shape}, "
                f"but config.json implies {want.shape}; the config and weights do not match"
            )
        variable.set_value(jnp.asarray(value, dtype=want.dtype))
    return nnx.merge(graphdef, state)


class _TensorSource:
    """Tensors of a HF directory by HuBERT name, with any `hubert.` prefix removed."""

    def __init__(self, directory: Path):
        self.directory = directory
        if (directory / SINGLE_FILE).is_file() or (directory / INDEX_FILE).is_file():
            store = WeightStore(directory)
            names, self._read = store.names(), store.read
        elif (directory / BIN_FILE).is_file() or (directory / BIN_INDEX_FILE).is_file():
            tensors = _load_torch(directory)
            names, self._read = list(tensors), lambda name: _to_numpy(tensors[name])
        else:
            raise JaxslmError(
                f"{directory}: no {SINGLE_FILE}, {INDEX_FILE}, {BIN_FILE} or {BIN_INDEX_FILE}"
            )
        prefixed = f"{CTC_PREFIX}feature_projection.projection.weight" in names
        self.prefix = CTC_PREFIX if prefixed else ""
        self.names = {n[len(self.prefix) :] for n in names if n.startswith(self.prefix)}

    def read(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise JaxslmError(f"{self.directory}: HuBERT weight {self.prefix}{name} is missing")
        return self._read(self.prefix + name)


def _load_torch(directory: Path) -> dict[str, Any]:
    try:
        import torch
    except ImportError as err:
        raise JaxslmError(
            f"{directory}: reading {BIN_FILE} needs torch; install it or convert to safetensors"
        ) from err
    if (directory / BIN_INDEX_FILE).is_file():
        index = json.loads((directory / BIN_INDEX_FILE).read_text())
        files = sorted(set(index.get("weight_map", {}).values()))
    else:
        files = [BIN_FILE]
    tensors: dict[str, Any] = {}
    for name in files:
        tensors.update(
            torch.load(directory / name, map_location="cpu", weights_only=True, mmap=True)
        )
    return tensors


def _to_numpy(tensor: Any) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy()


Reader = Callable[[str], np.ndarray]
Producer = Callable[[Reader], np.ndarray]


def _plan(cfg: HubertConfig, weights: _TensorSource) -> dict[tuple, Producer]:
    """For each parameter path of HubertEncoder, a function of a tensor reader giving its value."""
    plan: dict[tuple, Producer] = {}
    for i in range(len(cfg.conv_dim)):
        conv = f"feature_extractor.conv_layers.{i}"
        plan[("conv_layers", i, "kernel")] = _conv_kernel(f"{conv}.conv.weight")
        if cfg.conv_bias:
            plan[("conv_layers", i, "bias")] = _tensor(f"{conv}.conv.bias")
        if cfg.feat_extract_norm == "layer" or i == 0:
            _norm(plan, ("conv_layers", i, "norm"), f"{conv}.layer_norm")
    if cfg.feat_proj_layer_norm:
        _norm(plan, ("feature_norm",), "feature_projection.layer_norm")
    projection = ("feature_projection.projection", (cfg.conv_dim[-1],), (cfg.hidden_size,))
    _linear(plan, ("projection",), *projection)
    plan[("pos_conv", "kernel")] = lambda _: _pos_conv_weight(weights, cfg).transpose(2, 1, 0)
    plan[("pos_conv", "bias")] = _tensor(f"{POS_CONV}.bias")
    if cfg.conv_pos_batch_norm:
        batch_norm = "encoder.pos_conv_embed.batch_norm"
        _norm(plan, ("pos_conv", "batch_norm"), batch_norm)
        plan[("pos_conv", "batch_norm", "mean")] = _tensor(f"{batch_norm}.running_mean")
        plan[("pos_conv", "batch_norm", "var")] = _tensor(f"{batch_norm}.running_var")
    _norm(plan, ("encoder_norm",), "encoder.layer_norm")

    e, h, d, m = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size
    layer: dict[tuple, Producer] = {}
    _linear(layer, ("q",), "attention.q_proj", (e,), (h, d))
    _linear(layer, ("k",), "attention.k_proj", (e,), (h, d))
    _linear(layer, ("v",), "attention.v_proj", (e,), (h, d))
    _linear(layer, ("o",), "attention.out_proj", (h, d), (e,))
    _linear(layer, ("ffn_in",), "feed_forward.intermediate_dense", (e,), (m,))
    _linear(layer, ("ffn_out",), "feed_forward.output_dense", (m,), (e,))
    _norm(layer, ("attn_norm",), "layer_norm")
    _norm(layer, ("ffn_norm",), "final_layer_norm")
    for path, produce in layer.items():
        plan[("layers", *path)] = partial(_stack, produce, cfg.num_layers)
    return plan


def _tensor(name: str) -> Producer:
    return lambda read: read(name)


def _conv_kernel(name: str) -> Producer:
    """torch Conv1d weight [out, in, width] -> [width, in, out]."""
    return lambda read: read(name).transpose(2, 1, 0)


def _linear(plan: dict, path: tuple, name: str, in_shape: tuple, out_shape: tuple) -> None:
    """torch Linear weight [out, in] -> kernel [*in_shape, *out_shape]; bias [*out_shape]."""
    plan[(*path, "kernel")] = lambda read: read(f"{name}.weight").T.reshape(*in_shape, *out_shape)
    plan[(*path, "bias")] = lambda read: read(f"{name}.bias").reshape(out_shape)


def _norm(plan: dict, path: tuple, name: str) -> None:
    plan[(*path, "scale")] = _tensor(f"{name}.weight")
    plan[(*path, "bias")] = _tensor(f"{name}.bias")


def _stack(produce: Producer, num_layers: int, read: Reader) -> np.ndarray:
    """`produce` for every transformer layer, stacked on a leading axis."""
    return np.stack(
        [produce(lambda name, i=i: read(f"encoder.layers.{i}.{name}")) for i in range(num_layers)]
    )


def _pos_conv_weight(weights: _TensorSource, cfg: HubertConfig) -> np.ndarray:
    """The positional conv weight [out, in / groups, width], weight norm folded in."""
    if cfg.conv_pos_batch_norm:
        return weights.read(f"{POS_CONV}.weight")
    for g_key, v_key in WEIGHT_NORM_KEYS:
        if f"{POS_CONV}.{g_key}" in weights.names:
            g = weights.read(f"{POS_CONV}.{g_key}").astype(np.float64)
            v = weights.read(f"{POS_CONV}.{v_key}").astype(np.float64)
            norm = np.sqrt(np.sum(v * v, axis=(0, 1), keepdims=True))  # torch weight_norm, dim=2
            return (v * (g / norm)).astype(np.float32)
    raise JaxslmError(
        f"{weights.directory}: no weight-normalised positional conv ({POS_CONV}.weight_g/weight_v "
        "or parametrizations.weight.original0/1); if the checkpoint has BatchNorm there, "
        "config.json needs conv_pos_batch_norm: true"
    )
