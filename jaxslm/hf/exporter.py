"""`export-hf`: a jaxslm checkpoint -> a plain HF model directory (no custom code needed).

Parameters are restored once; each HF tensor is cut from them and written as it is produced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np
from tqdm import tqdm

from jaxslm.checkpoint import TOKENIZER_DIR, params_as_numpy, read_metadata, restore_params
from jaxslm.fsutil import atomic_directory, refuse_existing
from jaxslm.hf.config_map import generation_config, hf_config_from_model
from jaxslm.hf.param_map import ParamMap, param_maps
from jaxslm.hf.safetensors_io import HF_MAX_SHARD_BYTES, PlannedTensor, write_model
from jaxslm.hostmem import transform_on_cpu
from jaxslm.models.config import ModelConfig

NUMPY_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def export_hf(
    ckpt_dir: str | Path,
    out_dir: str | Path,
    dtype: str | None = None,
    max_shard_bytes: int = HF_MAX_SHARD_BYTES,
    overwrite: bool = False,
) -> Path:
    """Write `ckpt_dir` as a HF directory at `out_dir`; `dtype` defaults to the stored one."""
    ckpt_dir = Path(ckpt_dir)
    out_path = refuse_existing(out_dir, overwrite)
    cfg, vocab, _ = read_metadata(ckpt_dir)
    dtype = dtype or cfg.param_dtype
    params = params_as_numpy(restore_params(ckpt_dir, cfg))
    tensors = _plan_tensors(params, cfg, vocab.size, NUMPY_DTYPES[dtype])
    with atomic_directory(out_path, overwrite) as staging:
        with tqdm(total=len(tensors), desc="export", unit="tensor") as bar:
            write_model(staging, tensors, max_shard_bytes, progress=bar.update)
        _write_json(staging / "config.json", hf_config_from_model(cfg, vocab, dtype))
        _write_json(staging / "generation_config.json", generation_config(vocab))
        tokenizer_dir = ckpt_dir / TOKENIZER_DIR
        if tokenizer_dir.is_dir():
            for path in sorted(tokenizer_dir.iterdir()):
                shutil.copyfile(path, staging / path.name)
    return out_path


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _plan_tensors(params: dict, cfg: ModelConfig, vocab_size: int, dtype: np.dtype):
    """One PlannedTensor per HF tensor, produced lazily from the stacked parameters."""
    tensors = []
    for m in param_maps(cfg):
        value = params
        for key in m.path:
            value = value[key]
        if m.stacked:
            for layer in range(cfg.num_layers):
                tensors.append(_planned(m, m.hf_name.format(layer=layer), value[layer], dtype))
        elif m.is_vocab:
            tensors.append(_planned_rows(m, value, vocab_size, dtype))
        else:
            tensors.append(_planned(m, m.hf_name, value, dtype))
    return tensors


def _planned(m: ParamMap, name: str, value: np.ndarray, dtype: np.dtype) -> PlannedTensor:
    relayout = m.to_hf(value.shape)
    return PlannedTensor(
        name, m.hf_shape(value.shape), dtype, lambda: transform_on_cpu(relayout, value, dtype)
    )


def _planned_rows(m: ParamMap, value: np.ndarray, vocab_size: int, dtype: np.dtype):
    """Embedding or LM head as HF [V, embed] rows, padding rows dropped."""
    relayout = m.to_hf(value.shape)
    shape = (vocab_size, m.hf_shape(value.shape)[1])
    return PlannedTensor(
        m.hf_name,
        shape,
        dtype,
        lambda: transform_on_cpu(relayout, value, dtype)[:vocab_size],
    )
