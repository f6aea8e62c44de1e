"""`import-hf`: a HF (or slamkit) checkpoint -> a jaxslm checkpoint with a speech vocabulary.

Tensors are read one at a time from memory-mapped safetensors and converted into the jaxslm
layout, so peak host memory stays near one copy of the model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from jaxslm.checkpoint import TOKENIZER_DIR, abstract_params, write_checkpoint
from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_directory, refuse_existing
from jaxslm.hf.config_map import (
    SLAMKIT_MODEL_TYPE,
    SLAMKIT_WEIGHT_PREFIX,
    SPEECH_VOCAB_KEY,
    model_config_from_hf,
    unwrap_slamkit,
)
from jaxslm.hf.param_map import ParamMap, param_maps
from jaxslm.hf.safetensors_io import WeightStore
from jaxslm.hostmem import aligned_empty, transform_on_cpu
from jaxslm.models.config import ModelConfig
from jaxslm.text_tokenizer import TOKENIZER_FILE, HFTokenizer, speech_only_tokenizer
from jaxslm.vocab import SpeechVocab, resize_rows, unit_token

log = logging.getLogger(__name__)
DEFAULT_UNITS = 500


def import_hf(
    hf_dir: str | Path,
    out_dir: str | Path,
    speech_units: int = DEFAULT_UNITS,
    mode: str | None = None,
    tokenizer_dir: str | Path | None = None,
    dtype: str | None = None,
    init: str = "mean_cov",
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Convert `hf_dir` into a jaxslm checkpoint at `out_dir` and return its path.

    `mode` is `interleaved` (default for text LMs), `speech-only`, or inferred from the vocab
    size for slamkit checkpoints; `speech_units=0` keeps the text vocabulary unchanged.
    """
    hf_dir = Path(hf_dir)
    out_path = refuse_existing(out_dir, overwrite)
    config_path = hf_dir / "config.json"
    hf = _read_json(config_path)
    is_slamkit = hf.get("model_type") == SLAMKIT_MODEL_TYPE
    base = unwrap_slamkit(hf, config_path) if is_slamkit else hf
    store = WeightStore(hf_dir)
    prefix = SLAMKIT_WEIGHT_PREFIX if is_slamkit else ""
    source_cfg = model_config_from_hf(base, config_path, dtype or _default_dtype(store, prefix))
    tokenizer = _find_tokenizer(hf_dir, tokenizer_dir)
    vocab = _plan_vocab(
        source_cfg, base, tokenizer, speech_units, mode, is_slamkit, hf_dir, tokenizer_dir
    )
    cfg = source_cfg.replace(vocab_size=vocab.size)
    maps = param_maps(cfg)
    _check_tensors(store, prefix, maps, source_cfg, cfg, hf_dir)
    params = _convert(store, prefix, maps, cfg, vocab, init, seed)
    source = {"hf_dir": str(hf_dir.absolute()), "slamkit": is_slamkit, "init": init, "seed": seed}
    with atomic_directory(out_path, overwrite) as staging:
        write_checkpoint(staging, params, cfg, vocab, source)
        output_tokenizer = _output_tokenizer(tokenizer, vocab)
        if output_tokenizer is not None:
            output_tokenizer.save(staging / TOKENIZER_DIR)
    return out_path


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise JaxslmError(f"{path} not found: a HF model directory needs config.json")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise JaxslmError(f"{path}: not valid JSON ({err})") from err


def _default_dtype(store: WeightStore, prefix: str) -> str:
    name = prefix + "model.embed_tokens.weight"
    bf16 = name in store and store.info(name).dtype.name == "bfloat16"
    return "bfloat16" if bf16 else "float32"


def _find_tokenizer(hf_dir: Path, tokenizer_dir: str | Path | None) -> HFTokenizer | None:
    if tokenizer_dir is not None:
        return HFTokenizer.from_dir(tokenizer_dir)
    if (hf_dir / TOKENIZER_FILE).is_file():
        return HFTokenizer.from_dir(hf_dir)
    return None


def _plan_vocab(
    source_cfg: ModelConfig,
    hf: dict[str, Any],
    tokenizer: HFTokenizer | None,
    units: int,
    mode: str | None,
    is_slamkit: bool,
    hf_dir: Path,
    tokenizer_dir: str | Path | None,
) -> SpeechVocab:
    rows = source_cfg.vocab_size
    if SPEECH_VOCAB_KEY in hf:
        return _exported_vocab(SpeechVocab.from_dict(hf[SPEECH_VOCAB_KEY]), rows, tokenizer, hf_dir)
    if units == 0:
        return _with_special_ids(SpeechVocab("text", rows, 0), hf, tokenizer)
    if mode is None:
        mode = "speech-only" if is_slamkit and rows == units + 2 else "interleaved"
    if mode == "speech-only":
        if rows < units + 2:
            raise JaxslmError(
                f"{hf_dir}: speech-only needs {units + 2} embedding rows, the model has {rows}"
            )
        if is_slamkit and rows != units + 2:
            raise JaxslmError(
                f"{hf_dir}: slamkit vocab_size {rows} is not --speech-units {units} + 2"
            )
        return SpeechVocab.speech_only(units)
    if tokenizer is None:
        raise JaxslmError(
            f"{hf_dir}: interleaved mode places unit ids after the text tokenizer, but there is "
            f"no {TOKENIZER_FILE} here; pass --tokenizer DIR (the base text model's directory)"
        )
    where = tokenizer_dir or hf_dir
    if is_slamkit and len(tokenizer) + units + 2 != rows:
        raise JaxslmError(
            f"{where}: tokenizer has {len(tokenizer)} entries, so {units} units + 2 markers "
            f"give {len(tokenizer) + units + 2} ids, but the slamkit weights have {rows} rows; "
            "pass the base model's tokenizer and the right --speech-units"
        )
    if len(tokenizer) > rows:
        raise JaxslmError(
            f"{where}: tokenizer has {len(tokenizer)} entries but the weights in {hf_dir} have "
            f"only {rows} embedding rows; pass the tokenizer that belongs to this model"
        )
    vocab = SpeechVocab("interleaved", len(tokenizer), units)
    # slamkit's base_config carries its unit-tokeniser ids (pad 0, bos/eos 1), not the text ones.
    return _with_special_ids(vocab, {} if is_slamkit else hf, tokenizer)


def _exported_vocab(
    vocab: SpeechVocab, rows: int, tokenizer: HFTokenizer | None, hf_dir: Path
) -> SpeechVocab:
    """The layout recorded by `export-hf`, checked against the weights and tokenizer."""
    if rows != vocab.size:
        raise JaxslmError(
            f"{hf_dir / 'config.json'}: {SPEECH_VOCAB_KEY} describes {vocab.size} ids but "
            f"vocab_size is {rows}"
        )
    if vocab.mode == "interleaved" and (
        tokenizer is None
        or len(tokenizer) != rows
        or tokenizer.token_to_id(unit_token(0)) != vocab.unit_offset
    ):
        raise JaxslmError(
            f"{hf_dir}: exported by jaxslm with speech units, but its tokenizer does not hold "
            f"{unit_token(0)} at id {vocab.unit_offset}; restore the exported tokenizer files"
        )
    return vocab


def _with_special_ids(
    vocab: SpeechVocab, hf: dict[str, Any], tokenizer: HFTokenizer | None
) -> SpeechVocab:
    """Text BOS/EOS/PAD ids: those of config `hf`, else the tokenizer config's named tokens."""
    eos = hf.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    bos, pad = hf.get("bos_token_id"), hf.get("pad_token_id")
    if tokenizer is not None and not eos_ids:
        named = tokenizer.special_token_ids()
        bos, pad = named.get("bos_token", bos), named.get("pad_token", pad)
        eos_ids = (named["eos_token"],) if "eos_token" in named else ()
    return SpeechVocab(vocab.mode, vocab.text_size, vocab.num_units, bos, eos_ids, pad)


def _output_tokenizer(tokenizer: HFTokenizer | None, vocab: SpeechVocab) -> HFTokenizer | None:
    if vocab.mode == "speech-only":
        return speech_only_tokenizer(vocab)
    if tokenizer is not None and vocab.mode == "interleaved" and len(tokenizer) != vocab.size:
        tokenizer.extend(vocab)
    return tokenizer


def _leaf(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _hf_names(m: ParamMap, prefix: str, num_layers: int) -> list[str]:
    if m.stacked:
        return [prefix + m.hf_name.format(layer=i) for i in range(num_layers)]
    return [prefix + m.hf_name]


def _check_tensors(
    store: WeightStore,
    prefix: str,
    maps: list[ParamMap],
    source_cfg: ModelConfig,
    cfg: ModelConfig,
    hf_dir: Path,
) -> None:
    """Every expected tensor is present with the shape the config implies."""
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
                raise JaxslmError(f"{hf_dir}: weight {name} is missing from the safetensors files")
            info = store.info(name)
            if info.shape != hf_shape:
                raise JaxslmError(
                    f"{info.path}: {name} has shape {list(info.shape)} but config.json implies "
                    f"{list(hf_shape)}; the weights and config.json do not belong together"
                )
    ignored = sorted(set(store.names()) - expected)
    if ignored:
        log.warning("ignoring %d tensors not used by the model: %s", len(ignored), ignored[:8])


def _convert(
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
