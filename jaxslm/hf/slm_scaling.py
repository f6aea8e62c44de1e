"""`import-slm-scaling`: Cuervo & Marxer's speech LMs (github tiagoCuervo/slm_scaling, the code
of "Scaling Properties of Speech Language Models") -> a jaxslm checkpoint.

Their `TransformerLM` (src/slm/model.py) is a llama2.c-style Llama (docs/reference.md section
4): `tok_embeddings` tied to `output`; per layer `attention_norm`, `attention.wq/wk/wv/wo`,
`ffn_norm`, `feed_forward.w1` (gate), `w3` (up), `w2` (down), with the MLP width
`hidden_dim`, else 8 dim / 3 rounded up to `multiple_of`; a final `norm`; RMSNorm with
`norm_eps`; RoPE with theta 10,000 on *adjacent pairs* of each head's dimensions, so q/k rows
are permuted into jaxslm's (and HF's) half-split order here; positions up to `block_size`.
The published scaling checkpoints have vocabulary 502: units 0..499, EOS 500, PAD 501
(configs/scaling/README.md), which becomes jaxslm's units-first speech-only layout. Models with
a prefix-embedding table (`prefix_vocab_size`) are refused.

Sources: a native directory (`config.json` with `format_version` 1, `model_type` "slm" and
`model_args`, plus `model.safetensors` or a sharded index), or a training checkpoint `.pt`
(their `torch.save` payload with `model` and `model_args`), read with
`torch.load(weights_only=True)`: only tensors, plain containers and the numpy arrays of their
saved RNG states are accepted, never arbitrary pickled objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_directory, prepare_output
from jaxslm.hf.importer import check_tensors, convert_tensors, read_json_object
from jaxslm.hf.param_map import Naming, param_maps
from jaxslm.hf.safetensors_io import TensorInfo, WeightStore
from jaxslm.model_dir import TOKENIZER_DIR, write_checkpoint
from jaxslm.models.model_config import ModelConfig
from jaxslm.text_tokenizer import speech_only_tokenizer
from jaxslm.vocab import SpeechVocab

SLM_MODEL_TYPE = "slm"
ROPE_THETA = 10000.0  # precompute_freqs_cis's default, which TransformerLM uses
MODEL_ARGS = {  # ModelArgs fields (src/slm/model.py) and their defaults
    "dim": 512,
    "n_layers": 6,
    "n_heads": 8,
    "n_kv_heads": None,
    "vocab_size": 32000,
    "prefix_vocab_size": None,
    "hidden_dim": None,
    "multiple_of": 256,
    "norm_eps": 1e-5,
    "block_size": 2048,
    "dropout": 0.0,
    "prefix_pad": None,
}
WRAPPER_PREFIXES = ("_orig_mod.", "module.", "model.")  # torch.compile, DDP, wrappers
_LAYER = "layers.{layer}."
SLM_NAMING = Naming(
    {
        "embed": "tok_embeddings.weight",
        "attn_norm": _LAYER + "attention_norm.weight",
        **{n: _LAYER + f"attention.w{n}.weight" for n in "qkvo"},
        "mlp_norm": _LAYER + "ffn_norm.weight",
        "gate": _LAYER + "feed_forward.w1.weight",
        "up": _LAYER + "feed_forward.w3.weight",
        "down": _LAYER + "feed_forward.w2.weight",
        "final_norm": "norm.weight",
        "lm_head": "output.weight",
    },
    rope_pairs=True,
)
TIED_HEAD, EMBEDDING = SLM_NAMING.names["lm_head"], SLM_NAMING.names["embed"]


def mlp_width(dim: int, hidden_dim: int | None, multiple_of: int) -> int:
    """FeedForward's width: `hidden_dim`, else int(2 x 4 dim / 3) rounded up to `multiple_of`."""
    if hidden_dim is not None:
        return hidden_dim
    width = int(2 * (4 * dim) / 3)
    return multiple_of * -(-width // multiple_of)


def model_config(args: dict[str, Any], source: Path, param_dtype: str) -> ModelConfig:
    """The jaxslm decoder of their `model_args` (refusing what jaxslm's decoder cannot run)."""
    unknown = sorted(set(args) - set(MODEL_ARGS))
    if unknown:
        raise JaxslmError(
            f"{source}: model_args has unknown field(s) {unknown}; known: {sorted(MODEL_ARGS)}"
        )
    args = {**MODEL_ARGS, **args}
    if args["prefix_vocab_size"] is not None:
        raise JaxslmError(
            f"{source}: model_args.prefix_vocab_size={args['prefix_vocab_size']}: models with a "
            "prefix-embedding table are not supported (jaxslm's decoder has none); the "
            "published scaling checkpoints have no prefix table"
        )
    dim, heads = args["dim"], args["n_heads"]
    if dim % heads:
        raise JaxslmError(f"{source}: model_args.dim={dim} is not a multiple of n_heads={heads}")
    return ModelConfig(
        family="llama",
        vocab_size=args["vocab_size"],
        hidden_size=dim,
        intermediate_size=mlp_width(dim, args["hidden_dim"], args["multiple_of"]),
        num_layers=args["n_layers"],
        num_heads=heads,
        num_kv_heads=args["n_kv_heads"] or heads,
        head_dim=dim // heads,
        tie_word_embeddings=True,
        rms_norm_eps=args["norm_eps"],
        rope_theta=ROPE_THETA,
        max_position_embeddings=args["block_size"],
        param_dtype=param_dtype,
    )


def speech_vocab(vocab_size: int, units: int | None, source: Path) -> SpeechVocab:
    """Units first, then EOS (`<S>`, which also starts each scored sequence) and PAD: K =
    vocab_size - 2 by default; `units` = vocab_size - 1 reads a vocabulary without PAD."""
    units = vocab_size - 2 if units is None else units
    if units < 1 or vocab_size - units not in (1, 2):
        raise JaxslmError(
            f"{source}: vocab_size {vocab_size} with --speech-units {units}: their layout is "
            "K units, EOS and an optional PAD, so K must be vocab_size - 2 or vocab_size - 1"
        )
    return SpeechVocab.speech_only(units, "cuervo-marxer", pad=vocab_size - units == 2)


class TorchStateStore:
    """The model tensors of one of their training checkpoints, by name (wrapper prefixes
    stripped), with WeightStore's interface."""

    def __init__(self, path: Path, state: dict[str, Any]):
        self.path = path
        self.tensors = {_strip(name): tensor for name, tensor in state.items()}

    def names(self) -> list[str]:
        return list(self.tensors)

    def info(self, name: str) -> TensorInfo:
        return TensorInfo(self.path, self.read(name).dtype, tuple(self.tensors[name].shape), 0)

    def read(self, name: str) -> np.ndarray:
        return _to_numpy(self.tensors[name])

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def drop(self, name: str) -> None:
        del self.tensors[name]


def read_source(source: Path) -> tuple[dict[str, Any], WeightStore | TorchStateStore]:
    """(model_args, tensors) of a native directory or a training `.pt` file."""
    if source.is_dir():
        config_path = source / "config.json"
        config = read_json_object(config_path)
        if config.get("model_type") != SLM_MODEL_TYPE or config.get("format_version") != 1:
            raise JaxslmError(
                f"{config_path}: not a slm_scaling native config (expected model_type "
                f"{SLM_MODEL_TYPE!r} and format_version 1); HF models go through import-hf"
            )
        args = config.get("model_args")
        store = WeightStore(source)
    elif source.is_file():
        payload = _torch_payload(source)
        args, state = payload.get("model_args"), payload.get("model")
        if not isinstance(state, dict):
            raise JaxslmError(f"{source}: no 'model' state dict in this training checkpoint")
        store = TorchStateStore(source, state)
    else:
        raise JaxslmError(f"{source}: no such checkpoint directory or .pt file")
    if not isinstance(args, dict):
        raise JaxslmError(f"{source}: no 'model_args' object describing the model")
    args = dict(args)
    if "max_block_size" in args:  # an older name of block_size, as their loader accepts
        args["block_size"] = args.pop("max_block_size")
    return args, store


def import_slm_scaling(
    source: str | Path,
    out_dir: str | Path,
    speech_units: int | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert one of their checkpoints (`source`: native directory or training `.pt`) into a
    jaxslm checkpoint at `out_dir`; returns its path. `dtype` defaults to the weights' own
    (bfloat16 stays bfloat16, anything else becomes float32)."""
    source = Path(source)
    out_path = prepare_output(out_dir, overwrite)
    args, store = read_source(source)
    embed_dtype = store.info(EMBEDDING).dtype if EMBEDDING in store else None
    default = "bfloat16" if embed_dtype is not None and embed_dtype.name == "bfloat16" else None
    cfg = model_config(args, source, dtype or default or "float32")
    vocab = speech_vocab(cfg.vocab_size, speech_units, source)
    if TIED_HEAD in store and EMBEDDING in store:
        if not np.array_equal(store.read(TIED_HEAD), store.read(EMBEDDING)):
            raise JaxslmError(
                f"{source}: {TIED_HEAD} differs from {EMBEDDING}, but TransformerLM ties them"
            )
        if isinstance(store, TorchStateStore):
            store.drop(TIED_HEAD)
    maps = param_maps(cfg, SLM_NAMING)
    check_tensors(store, "", maps, cfg, cfg, source)
    params = convert_tensors(store, "", maps, cfg, vocab, "mean", 0)
    record = {"slm_scaling": str(source.absolute()), "model_args": args}
    with atomic_directory(out_path, overwrite) as staging:
        write_checkpoint(staging, params, cfg, vocab, record)
        speech_only_tokenizer(vocab).save(staging / TOKENIZER_DIR)
    return out_path


def _torch_payload(path: Path) -> dict[str, Any]:
    """Their training checkpoint through torch's weights-only unpickler, which also admits the
    numpy arrays of the RNG states they save (data, never code)."""
    import torch

    numpy_types = [np.ndarray, np.dtype, np.zeros(1).__reduce__()[0]]
    numpy_types += sorted({type(np.dtype(code)) for code in np.typecodes["All"]}, key=str)
    try:
        with torch.serialization.safe_globals(numpy_types):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise JaxslmError(
            f"{path}: cannot be read as a training checkpoint with torch.load(weights_only=True) "
            f"({first[:300]}); convert it with their `slm-convert` to a native directory"
        ) from err
    if not isinstance(payload, dict):
        raise JaxslmError(f"{path}: expected their checkpoint dict, found {type(payload).__name__}")
    return payload


def _strip(name: str) -> str:
    """`name` without the wrapper prefixes torch.compile / DDP add, however nested."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name


def _to_numpy(tensor) -> np.ndarray:
    import ml_dtypes
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()
