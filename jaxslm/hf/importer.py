"""`import-hf`: a HF (or slamkit) checkpoint -> a jaxslm checkpoint with a speech vocabulary.

Tensors are read from the safetensors files one at a time and converted into the jaxslm
layout, so peak host memory stays near one copy of the model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_directory, prepare_output
from jaxslm.hf.config_map import (
    SLAMKIT_MODEL_TYPE,
    SLAMKIT_WEIGHT_PREFIX,
    model_config_from_hf,
    unwrap_slamkit,
)
from jaxslm.hf.param_map import ParamMap, param_maps
from jaxslm.hf.row_init import resize_rows
from jaxslm.hf.safetensors_io import WeightStore
from jaxslm.hf.vocab_plan import VocabSource, find_tokenizer, output_tokenizer, plan_vocab
from jaxslm.hostmem import aligned_empty, transform_on_cpu
from jaxslm.model_dir import TOKENIZER_DIR, abstract_params, write_checkpoint
from jaxslm.models.model_config import ModelConfig
from jaxslm.vocab import SpeechVocab

log = logging.getLogger(__name__)


def import_hf(
    hf_dir: str | Path,
    out_dir: str | Path,
    speech_units: int | None = None,
    mode: str | None = None,
    tokenizer_dir: str | Path | None = None,
    dtype: str | None = None,
    init: str = "mean_cov",
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Convert `hf_dir` into a jaxslm checkpoint at `out_dir` and return its path.

    `speech_units` defaults to 500 (inferred from the weights for slamkit checkpoints); 0 keeps
    the text vocabulary unchanged. `mode` is `interleaved` (default) or `speech-only`; slamkit
    checkpoints are interleaved when a tokenizer is given and speech-only otherwise.
    """
    hf_dir = Path(hf_dir)
    out_path = prepare_output(out_dir, overwrite)
    config_path = hf_dir / "config.json"
    hf = read_json_object(config_path)
    is_slamkit = hf.get("model_type") == SLAMKIT_MODEL_TYPE
    base = unwrap_slamkit(hf, config_path) if is_slamkit else hf
    store = WeightStore(hf_dir)
    prefix = SLAMKIT_WEIGHT_PREFIX if is_slamkit else ""
    source_cfg = model_config_from_hf(base, config_path, dtype or _default_dtype(store, prefix))
    tokenizer = find_tokenizer(hf_dir, tokenizer_dir)
    vocab_source = VocabSource(
        base, source_cfg.vocab_size, hf_dir, is_slamkit, tokenizer, Path(tokenizer_dir or hf_dir)
    )
    vocab = plan_vocab(vocab_source, speech_units, mode)
    cfg = source_cfg.replace(vocab_size=vocab.size)
    maps = param_maps(cfg)
    check_tensors(store, prefix, maps, source_cfg, cfg, hf_dir)
    params = convert_tensors(store, prefix, maps, cfg, vocab, init, seed)
    source = {"hf_dir": str(hf_dir.absolute()), "slamkit": is_slamkit, "init": init, "seed": seed}
    with atomic_directory(out_path, overwrite) as staging:
        write_checkpoint(staging, params, cfg, vocab, source)
        saved_tokenizer = output_tokenizer(tokenizer, vocab)
        if saved_tokenizer is not None:
            saved_tokenizer.save(staging / TOKENIZER_DIR)
    return out_path


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object of a model directory's config.json, or a one-line error."""
    if not path.is_file():
        raise JaxslmError(f"{path} not found: a model directory needs config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise JaxslmError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise JaxslmError(
            f"{path}: expected a JSON object of model settings, found a {type(config).__name__}"
        )
    return config


def _default_dtype(store: WeightStore, prefix: str) -> str:
    name = prefix + "model.embed_tokens.weight"
    bf16 = name in store and store.info(name).dtype.name == "bfloat16"
    return "bfloat16" if bf16 else "float32"


def _leaf(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _hf_names(m: ParamMap, prefix: str, num_layers: int) -> list[str]:
    if m.stacked:
        return [prefix + m.hf_name.format(layer=i) for i in range(num_layers)]
    return [prefix + m.hf_name]


def check_tensors(
    store: WeightStore,
    prefix: str,
    maps: list[ParamMap],
    source_cfg: ModelConfig,
    cfg: ModelConfig,
    hf_dir: Path,
) -> None:
    """Every expected tensor of `store` (safetensors, or any object with the same `names`,
    `info`, `read` and `in`) is present with the shape the config implies."""
    abstract = abstract_params(cfg)
    expected: set[str] = set()
    for m in maps:
        shape = _leaf(abstract, m.path).shape
        shape = shape[1:] if m.stacked else shape
        hf_shape = m.hf_shape(shape)
        if m.is_vocab:
            hf_shape = (source_cfg.vocab_size, cfg.hidden_size)
        for name in _hf_names(m, prefix, cfg.num_layers):
            expected.add(name)
            if name not in store:
                raise JaxslmError(f"{hf_dir}: weight {name} is missing from its weights")
            info = store.info(name)
            if info.shape != hf_shape:
                raise JaxslmError(
                    f"{info.path}: {name} has shape {list(info.shape)} but config.json implies "
                    f"{list(hf_shape)}; the weights and the config do not belong together"
                )
    ignored = sorted(set(store.names()) - expected)
    if ignored:
        log.warning("ignoring %d tensors not used by the model: %s", len(ignored), ignored[:8])


def convert_tensors(
    store: WeightStore,
    prefix: str,
    maps: list[ParamMap],
    cfg: ModelConfig,
    vocab: SpeechVocab,
    init: str,
    seed: int,
) -> dict:
    """Read every tensor into the jaxslm layout; vocabulary rows resized and padded.

    Each parameter is allocated once (64-byte aligned, so Orbax's jax arrays adopt it without a
    copy) and filled tensor by tensor; relayouts run through XLA on the CPU.
    """
    abstract = abstract_params(cfg)
    dtype = np.dtype(_leaf(abstract, ("embed", "embedding")).dtype)
    params: dict = {}
    total = sum(len(_hf_names(m, prefix, cfg.num_layers)) for m in maps)
    with tqdm(total=total, desc="import", unit="tensor") as bar:
        for offset, m in enumerate(maps):
            shape = _leaf(abstract, m.path).shape
            names = _hf_names(m, prefix, cfg.num_layers)
            value = aligned_empty(shape, dtype)
            if m.is_vocab:
                rows = aligned_empty((cfg.padded_vocab_size, cfg.hidden_size), dtype)
                rows[vocab.size :] = 0
                resize_rows(
                    store.read(names[0]),
                    vocab.size,
                    init,
                    seed + offset,
                    cfg.initializer_range,
                    out=rows[: vocab.size],
                )
                value[...] = transform_on_cpu(m.to_jaxslm(shape), rows, dtype)
                del rows
            elif m.stacked:
                for layer, name in enumerate(names):
                    value[layer] = transform_on_cpu(m.to_jaxslm(shape[1:]), store.read(name), dtype)
            else:
                value[...] = transform_on_cpu(m.to_jaxslm(shape), store.read(names[0]), dtype)
            node = params
            for key in m.path[:-1]:
                node = node.setdefault(key, {})
            node[m.path[-1]] = value
            bar.update(len(names))
    return params
