"""Load a textless/fairseq unit HiFi-GAN ("CodeGenerator") folder as a Flax NNX CodeHifiGan.

A vocoder folder holds its JSON config (`config.json`, or the folder's only `.json`, e.g.
textless's `hifigan_lj_mhubert_base_25hz_config.json`) and its weights: one `.safetensors`
file, or one PyTorch checkpoint (`.pt`, `.pth`, `.bin`) read with
`torch.load(weights_only=True)`, which never runs code from the file. A checkpoint is the
generator's state dict or a dict holding it under `generator`, as textless and fairseq save
them. Optional `speakers.txt` / `styles.txt` name the speaker and style ids, one per line.

Weight norm (`weight_g`/`weight_v`, or `parametrizations.weight.original0/1`) is folded into
plain kernels: weight = g * v / |v|, the norm over every axis but the first (torch's default
`dim=0`: per output channel of a conv, per input channel of a transposed conv).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxslm.errors import JaxslmError
from jaxslm.hf.safetensors_io import SafetensorsFile
from jaxslm.speech.vocoder_model import CodeHifiGan, VocoderConfig

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
WEIGHT_NORM_KEYS = (
    ("weight_g", "weight_v"),
    ("parametrizations.weight.original0", "parametrizations.weight.original1"),
)


@dataclass(frozen=True)
class VocoderFiles:
    """Where a vocoder folder's config, weights and name lists are."""

    config: Path
    weights: Path
    speakers: Path | None
    styles: Path | None


def find_vocoder_files(directory: str | Path) -> VocoderFiles:
    """The files of vocoder folder `directory`, or a one-line error saying what is missing."""
    directory = Path(directory)
    if not directory.is_dir():
        raise JaxslmError(f"--vocoder {directory}: no such folder (give a vocoder folder or 'toy')")
    jsons = sorted(directory.glob("*.json"))
    configs = [p for p in jsons if p.name == "config.json"] or jsons
    if len(configs) != 1:
        found = ", ".join(p.name for p in configs) or "none"
        raise JaxslmError(
            f"{directory}: needs one vocoder JSON config (config.json, or a single .json); "
            f"found {found}"
        )
    weights = sorted(directory.glob("*.safetensors")) or sorted(
        p for p in directory.iterdir() if p.suffix in TORCH_SUFFIXES
    )
    if len(weights) != 1:
        found = ", ".join(p.name for p in weights) or "none"
        raise JaxslmError(
            f"{directory}: needs one weights file (.safetensors, or a .pt/.pth/.bin state "
            f"dict); found {found}"
        )
    named = {name: directory / f"{name}.txt" for name in ("speakers", "styles")}
    return VocoderFiles(
        configs[0],
        weights[0],
        *(path if path.is_file() else None for path in named.values()),
    )


def read_vocoder_config(path: Path) -> VocoderConfig:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise JaxslmError(f"{path}: not a readable JSON config ({err})") from None
    if not isinstance(cfg, dict):
        raise JaxslmError(f"{path}: the vocoder config must be a JSON object")
    return VocoderConfig.from_textless(cfg, str(path))


def load_code_hifigan(directory: str | Path) -> tuple[CodeHifiGan, VocoderFiles]:
    """The vocoder of folder `directory` with its weights, and where its files are."""
    files = find_vocoder_files(directory)
    cfg = read_vocoder_config(files.config)
    tensors = _Tensors(read_state_dict(files.weights), files.weights)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: CodeHifiGan(cfg)))
    plan = _plan(cfg)
    for path, variable in nnx.to_flat_state(state):
        value = plan[path](tensors)
        want = variable.get_value()
        if value.shape != want.shape:
            raise JaxslmError(
                f"{files.weights}: {'.'.join(map(str, path))} has shape {value.shape}, but "
                f"{files.config.name} implies {want.shape}; the config and weights do not match"
            )
        variable.set_value(jnp.asarray(value, jnp.float32))
    unused = sorted(set(tensors.arrays) - tensors.used)
    if unused:
        raise JaxslmError(
            f"{files.weights}: weights {', '.join(unused[:3])}{' ...' if len(unused) > 3 else ''}"
            f" are not part of the CodeGenerator that {files.config.name} describes (F0, style "
            "or speaker-encoder variants are not supported)"
        )
    return nnx.merge(graphdef, state), files


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """name -> float32 array of a safetensors file or a torch state dict (or its `generator`)."""
    if path.suffix == ".safetensors":
        source = SafetensorsFile(path)
        return {name: source.read(name).astype(np.float32) for name in source.tensors}
    try:
        import torch
    except ImportError:
        raise JaxslmError(
            f"{path}: reading a PyTorch checkpoint needs torch; install it, or save the "
            "generator's state dict as .safetensors"
        ) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles that weights_only refuses, truncated files, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise JaxslmError(
            f"{path}: not a weights-only PyTorch checkpoint ({first}); save the generator's "
            "state dict (torch.save(model.state_dict())) or safetensors"
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("generator"), dict):
        loaded = loaded["generator"]
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        keys = list(loaded)[:5] if isinstance(loaded, dict) else type(loaded).__name__
        raise JaxslmError(
            f"{path}: expected a state dict of tensors, or a dict with one under 'generator' "
            f"(textless/fairseq layout); found {keys}"
        )
    return {name: tensor.detach().float().numpy() for name, tensor in loaded.items()}


class _Tensors:
    """A state dict read by name, remembering which names were used."""

    def __init__(self, arrays: dict[str, np.ndarray], source: Path):
        self.arrays, self.source, self.used = arrays, source, set()

    def has(self, name: str) -> bool:
        return name in self.arrays

    def read(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise JaxslmError(
                f"{self.source}: weight {name} is missing; not a textless/fairseq CodeGenerator "
                "state dict, or the config's options (speakers, styles, duration predictor) do "
                "not match it"
            )
        self.used.add(name)
        return self.arrays[name]

    def weight(self, prefix: str) -> np.ndarray:
        """`prefix.weight`, or its weight-norm parts folded into one."""
        for g_key, v_key in WEIGHT_NORM_KEYS:
            if self.has(f"{prefix}.{g_key}"):
                g = self.read(f"{prefix}.{g_key}").astype(np.float64)
                v = self.read(f"{prefix}.{v_key}").astype(np.float64)
                norm = np.sqrt(np.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))
                return (g * v / norm).astype(np.float32)
        return self.read(f"{prefix}.weight")


Producer = Callable[[_Tensors], np.ndarray]


def _plan(cfg: VocoderConfig) -> dict[tuple, Producer]:
    """For each parameter path of CodeHifiGan, a function of a tensor reader giving its value."""
    plan: dict[tuple, Producer] = {("units",): _tensor("dict.weight")}
    if cfg.num_speakers:
        plan[("speakers",)] = _tensor("spkr.weight")
    if cfg.num_styles:
        plan[("styles",)] = _tensor("style.weight")
    if cfg.duration_hidden is not None:
        _conv(plan, ("duration", "conv1"), "dur_predictor.conv1.0")
        _conv(plan, ("duration", "conv2"), "dur_predictor.conv2.0")
        for ln in ("ln1", "ln2"):
            plan[("duration", ln, "scale")] = _tensor(f"dur_predictor.{ln}.weight")
            plan[("duration", ln, "bias")] = _tensor(f"dur_predictor.{ln}.bias")
        plan[("duration", "proj_kernel")] = lambda t: t.read("dur_predictor.proj.weight")[0]
        plan[("duration", "proj_bias")] = lambda t: t.read("dur_predictor.proj.bias")[0]
    _conv(plan, ("conv_pre",), "conv_pre")
    _conv(plan, ("conv_post",), "conv_post")
    for stage in range(len(cfg.upsample_rates)):
        # torch ConvTranspose1d [in, out, width] -> flipped correlation kernel [width, in, out]
        plan[("ups", stage, "kernel")] = _weight(
            f"ups.{stage}", lambda w: w[:, :, ::-1].transpose(2, 0, 1)
        )
        plan[("ups", stage, "bias")] = _tensor(f"ups.{stage}.bias")
    blocks = len(cfg.upsample_rates) * len(cfg.resblock_kernel_sizes)
    for block in range(blocks):
        dilations = cfg.resblock_dilation_sizes[block % len(cfg.resblock_kernel_sizes)]
        for group in ("convs1", "convs2"):
            for index in range(len(dilations)):
                name = f"resblocks.{block}.{group}.{index}"
                _conv(plan, ("resblocks", block, group, index), name)
    return plan


def _tensor(name: str) -> Producer:
    return lambda tensors: tensors.read(name)


def _weight(prefix: str, layout: Callable[[np.ndarray], np.ndarray]) -> Producer:
    return lambda tensors: np.ascontiguousarray(layout(tensors.weight(prefix)))


def _conv(plan: dict, path: tuple, prefix: str) -> None:
    """torch Conv1d weight [out, in, width] -> kernel [width, in, out]; bias as is."""
    plan[(*path, "kernel")] = _weight(prefix, lambda w: w.transpose(2, 1, 0))
    plan[(*path, "bias")] = _tensor(f"{prefix}.bias")


def speaker_names(path: Path | None) -> list[str]:
    """The names of a `speakers.txt` / `styles.txt` (one per line), or none."""
    if path is None:
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def describe(cfg: VocoderConfig) -> dict[str, Any]:
    """A JSON-ready summary of a vocoder's shape."""
    return {
        "units": cfg.num_units,
        "duration_predictor": cfg.duration_hidden is not None,
        "speakers": cfg.num_speakers,
        "styles": cfg.num_styles,
        "sample_rate": cfg.sampling_rate,
        "samples_per_frame": cfg.samples_per_frame,
    }
