"""A jaxslm model checkpoint directory: Orbax parameters plus a JSON file with model config and
vocabulary (a training run's step checkpoints are jaxslm.training.step_checkpoints).

Layout of CKPT_DIR:
  jaxslm.json   {"format": 1, "model": ModelConfig, "vocab": SpeechVocab, "source": {...}}
  params/       Orbax checkpoint of the parameter tree (stacked layers)
  tokenizer/    tokenizer.json and config files with the unit and modality tokens

A training run directory (`python -m jaxslm.train`) also loads as a checkpoint: it holds
jaxslm.json and tokenizer/, and its parameters are the `params` item of the newest intact step
under checkpoints/ (a damaged newer one is skipped with a warning; see checkpoint_fallback).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxslm.checkpoint_fallback import check_fits, newest_intact, reading
from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_write_text
from jaxslm.hostmem import cpu_device, to_cpu_array
from jaxslm.models.decoder import abstract_decoder
from jaxslm.models.model_config import ModelConfig
from jaxslm.text_tokenizer import TextTokenizer, load_text_tokenizer
from jaxslm.vocab import SpeechVocab

FORMAT_VERSION = 1
METADATA_FILE = "jaxslm.json"
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"
RESTORE_CONCURRENT_GB = 1
RUN_CHECKPOINTS_DIR = "checkpoints"
MISMATCH_HINT = (
    f"the parameters were saved for another model or vocabulary than the one {METADATA_FILE} "
    f"describes: put back the {METADATA_FILE} they were saved with, or re-create the checkpoint"
)


def write_checkpoint(
    directory: Path, params: dict, cfg: ModelConfig, vocab: SpeechVocab, source: dict[str, Any]
) -> None:
    """Save `params` (a pure dict of arrays) and the metadata into `directory`.

    Weights are stored uncompressed, one array per parameter (no OCDBT): zstd saves little on
    float weights, and on CPU both choices made writing and reading several times faster.
    """
    params = jax.tree.map(to_cpu_array, params)  # Orbax writes jax arrays faster than numpy
    handler = ocp.PyTreeCheckpointHandler(use_compression=False, use_ocdbt=False)
    with _quiet_absl(), ocp.Checkpointer(handler) as checkpointer:
        checkpointer.save(directory.absolute() / PARAMS_DIR, args=ocp.args.PyTreeSave(params))
    write_metadata(directory, cfg, vocab, source)


def write_metadata(
    directory: Path, cfg: ModelConfig, vocab: SpeechVocab, source: dict[str, Any]
) -> None:
    """Write jaxslm.json (model config, vocabulary, source) atomically into `directory`."""
    metadata = {
        "format": FORMAT_VERSION,
        "model": cfg.to_dict(),
        "vocab": vocab.to_dict(),
        "source": source,
    }
    atomic_write_text(directory / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Silence Orbax's absl warnings (an OCDBT merge note that does not apply without OCDBT)."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def read_metadata(directory: str | Path) -> tuple[ModelConfig, SpeechVocab, dict[str, Any]]:
    """Model config, vocabulary and source info of a checkpoint directory."""
    path = Path(directory) / METADATA_FILE
    if not Path(directory).is_dir():
        raise JaxslmError(f"{directory}: no such folder (a jaxslm checkpoint or run directory)")
    if not path.is_file():
        raise JaxslmError(
            f"{path} not found: {directory} is not a jaxslm checkpoint "
            "(make one with `jaxslm-convert import-hf`)"
        )
    metadata = json.loads(path.read_text())
    if metadata.get("format") != FORMAT_VERSION:
        raise JaxslmError(f"{path}: format {metadata.get('format')} is not {FORMAT_VERSION}")
    return (
        ModelConfig.from_dict(metadata["model"]),
        SpeechVocab.from_dict(metadata["vocab"]),
        metadata.get("source", {}),
    )


def params_candidates(directory: str | Path) -> list[Path]:
    """The Orbax parameter directories to read, best first: a model checkpoint's params/, or the
    params/ of a run's checkpoints from the newest (read through `newest_intact`)."""
    directory = Path(directory).absolute()
    if (directory / PARAMS_DIR).is_dir():
        return [directory / PARAMS_DIR]
    steps_dir = directory / RUN_CHECKPOINTS_DIR
    steps = [
        int(p.name)
        for p in (steps_dir.iterdir() if steps_dir.is_dir() else ())
        if p.name.isdigit() and (p / PARAMS_DIR).is_dir()
    ]
    if not steps:
        raise JaxslmError(
            f"{directory}: no parameters found (neither {PARAMS_DIR}/ nor a finished checkpoint "
            f"under {RUN_CHECKPOINTS_DIR}/)"
        )
    return [steps_dir / str(step) / PARAMS_DIR for step in sorted(steps, reverse=True)]


def load_tokenizer(directory: str | Path, vocab: SpeechVocab) -> TextTokenizer | None:
    """The text tokenizer saved with a checkpoint or run (None for speech-only models)."""
    if vocab.mode == "speech-only":
        return None
    return load_text_tokenizer(Path(directory) / TOKENIZER_DIR)


def abstract_params(cfg: ModelConfig) -> dict:
    """Pure dict of ShapeDtypeStructs shaped like the decoder's parameters."""
    return nnx.to_pure_dict(nnx.state(abstract_decoder(cfg), nnx.Param))


def restore_params(directory: str | Path, cfg: ModelConfig, shardings=None) -> dict:
    """Restore the parameter tree of a checkpoint, or of a run's newest intact checkpoint;
    `shardings` (a matching tree) places it, else one CPU device."""
    return restore_params_from(directory, cfg, shardings)[1]


def restore_params_from(
    directory: str | Path, cfg: ModelConfig, shardings=None
) -> tuple[Path, dict]:
    """`restore_params`, with the Orbax parameter directory read (a run's names its step)."""
    abstract = abstract_params(cfg)
    if shardings is None:
        cpu = jax.sharding.SingleDeviceSharding(cpu_device())
        shardings = jax.tree.map(lambda _: cpu, abstract)
    target = jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        abstract,
        shardings,
    )
    # Restoring 1 GB at a time keeps the host peak near one model copy (and was faster on CPU).
    handler = ocp.StandardCheckpointHandler(restore_concurrent_gb=RESTORE_CONCURRENT_GB)

    def read(params_dir: Path) -> dict:
        with reading(params_dir), ocp.Checkpointer(handler) as checkpointer:
            check_fits({params_dir: target}, MISMATCH_HINT)
            return checkpointer.restore(params_dir, args=ocp.args.StandardRestore(target))

    return newest_intact(params_candidates(directory), read)


def restore_param(params_dir: Path, cfg: ModelConfig, path: tuple[str, ...]) -> np.ndarray:
    """One parameter (e.g. ("layers", "mlp", "up", "kernel")) of the Orbax parameter directory
    `params_dir` restored alone onto the host; DamagedCheckpoint when it cannot be read."""
    leaf = abstract_params(cfg)
    for key in path:
        leaf = leaf[key]
    cpu = jax.sharding.SingleDeviceSharding(cpu_device())
    item: dict = {}
    node = item
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=cpu)
    restore_args = jax.tree.map(
        lambda s: ocp.ArrayRestoreArgs(sharding=cpu, global_shape=s.shape, dtype=s.dtype), item
    )
    args = ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
    with reading(params_dir), ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
        check_fits({params_dir: item}, MISMATCH_HINT, partial=True)
        restored = checkpointer.restore(params_dir, args=args)
    for key in path:
        restored = restored[key]
    return np.asarray(restored)


def params_as_numpy(params: dict) -> dict:
    """Host numpy view of a restored parameter tree."""
    return jax.tree.map(np.asarray, params)
