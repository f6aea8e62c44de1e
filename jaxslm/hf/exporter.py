"""`export-hf`: a jaxslm checkpoint -> a plain HF model directory (no custom code needed).

Parameters are restored one at a time; each HF tensor is cut from the parameter in hand and
written as it is produced, so peak host memory is about the largest parameter, not the model.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import ml_dtypes
import numpy as np
from tqdm import tqdm

from jaxslm.checkpoint_fallback import newest_intact
from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_directory, prepare_output
from jaxslm.hf.config_map import generation_config, hf_config_from_model
from jaxslm.hf.param_map import param_maps
from jaxslm.hf.safetensors_io import HF_MAX_SHARD_BYTES, PlannedTensor, write_model
from jaxslm.hf.sentencepiece_config import sentencepiece_tokenizer_config
from jaxslm.hostmem import transform_on_cpu
from jaxslm.model_dir import (
    TOKENIZER_DIR,
    abstract_params,
    params_candidates,
    read_metadata,
    restore_param,
)
from jaxslm.models.model_config import ModelConfig
from jaxslm.vocab import SpeechVocab

SENTENCEPIECE_FILE = "tokenizer.model"
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
NUMPY_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def export_hf(
    ckpt_dir: str | Path,
    out_dir: str | Path,
    dtype: str | None = None,
    max_shard_bytes: int = HF_MAX_SHARD_BYTES,
    overwrite: bool = False,
) -> Path:
    """Write `ckpt_dir` as a HF directory at `out_dir`; `dtype` defaults to the stored one."""
    if not max_shard_bytes >= 1:
        raise JaxslmError(f"max_shard_bytes must be a positive size, got {max_shard_bytes}")
    ckpt_dir = Path(ckpt_dir)
    out_path = prepare_output(out_dir, overwrite)
    cfg, vocab, _ = read_metadata(ckpt_dir)
    dtype = dtype or cfg.param_dtype

    def export_from(params_dir: Path) -> None:
        params = _ParamInHand(params_dir, cfg, [m.path for m in param_maps(cfg)])
        tensors = _plan_tensors(params, cfg, vocab.size, NUMPY_DTYPES[dtype])
        with atomic_directory(out_path, overwrite) as staging, contextlib.closing(params):
            with tqdm(total=len(tensors), desc="export", unit="tensor") as bar:
                write_model(staging, tensors, max_shard_bytes, progress=bar.update)
            _write_json(staging / "config.json", hf_config_from_model(cfg, vocab, dtype))
            _write_json(staging / "generation_config.json", generation_config(vocab))
            _write_tokenizer(ckpt_dir / TOKENIZER_DIR, vocab, staging)

    # A damaged parameter file ends this export; it then starts over from an older checkpoint.
    newest_intact(params_candidates(ckpt_dir), export_from)
    return out_path


class _ParamInHand:
    """Restores parameters of the Orbax directory `params_dir` on demand in `order`, holding
    the one in hand and the next one, which is restored in the background while the current one
    is written."""

    def __init__(self, params_dir: Path, cfg: ModelConfig, order: list[tuple[str, ...]]):
        self.params_dir, self.cfg, self.order = params_dir, cfg, order
        self.restorer = ThreadPoolExecutor(max_workers=1)
        self.pending: dict[tuple[str, ...], Future] = {}
        self.path: tuple[str, ...] | None = None
        self.value: np.ndarray | None = None

    def _restore(self, path: tuple[str, ...]) -> Future:
        if path not in self.pending:
            self.pending[path] = self.restorer.submit(
                restore_param, self.params_dir, self.cfg, path
            )
        return self.pending[path]

    def get(self, path: tuple[str, ...]) -> np.ndarray:
        if path != self.path:
            self.value = None
            self.value = self._restore(path).result()
            del self.pending[path]
            self.path = path
            following = self.order.index(path) + 1
            if following < len(self.order):
                self._restore(self.order[following])
        return self.value

    def close(self) -> None:
        self.restorer.shutdown(wait=True, cancel_futures=True)


def _write_tokenizer(tokenizer_dir: Path, vocab: SpeechVocab, staging: Path) -> None:
    """Copy the checkpoint's tokenizer files; a lone SentencePiece model gets the
    tokenizer_config.json that AutoTokenizer needs to read it with the speech tokens."""
    if not tokenizer_dir.is_dir():
        return
    for path in sorted(tokenizer_dir.iterdir()):
        shutil.copyfile(path, staging / path.name)
    model_file = tokenizer_dir / SENTENCEPIECE_FILE
    if model_file.is_file() and not any((staging / name).exists() for name in HF_TOKENIZER_FILES):
        config = sentencepiece_tokenizer_config(model_file, vocab)
        _write_json(staging / "tokenizer_config.json", config)


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _plan_tensors(params: _ParamInHand, cfg: ModelConfig, vocab_size: int, dtype: np.dtype):
    """One PlannedTensor per HF tensor, in parameter order so each parameter is restored once."""
    abstract = abstract_params(cfg)
    tensors = []
    for m in param_maps(cfg):
        shape = abstract
        for key in m.path:
            shape = shape[key]
        shape = shape.shape
        if m.stacked:
            relayout = m.to_hf(shape[1:])
            for layer in range(cfg.num_layers):
                produce = _producer(params, m.path, relayout, dtype, layer=layer)
                name = m.hf_name.format(layer=layer)
                tensors.append(PlannedTensor(name, m.hf_shape(shape[1:]), dtype, produce))
        else:
            hf_shape = m.hf_shape(shape)
            rows = vocab_size if m.is_vocab else None
            if rows is not None:
                hf_shape = (rows, *hf_shape[1:])
            produce = _producer(params, m.path, m.to_hf(shape), dtype, rows=rows)
            tensors.append(PlannedTensor(m.hf_name, hf_shape, dtype, produce))
    return tensors


def _producer(params: _ParamInHand, path, relayout, dtype, layer=None, rows=None):
    """Function producing one HF tensor: a layer of the parameter, relaid out, rows cut."""

    def produce() -> np.ndarray:
        value = params.get(path)
        tensor = transform_on_cpu(relayout, value if layer is None else value[layer], dtype)
        return tensor if rows is None else tensor[:rows]

    return produce
