"""Cuervo & Marxer's checkpoints (github tiagoCuervo/slm_scaling): tiny random models in their
native and training-checkpoint layouts imported, against a PyTorch forward written here from
their model's equations (src/slm/model.py), and exported to HF for transformers."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxslm
from jaxslm.errors import JaxslmError
from jaxslm.hf.cli import main as convert_main
from jaxslm.hf.exporter import export_hf
from jaxslm.hf.slm_scaling import import_slm_scaling

ARGS = {
    "dim": 64,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "vocab_size": 502,
    "prefix_vocab_size": None,
    "hidden_dim": None,
    "multiple_of": 32,
    "norm_eps": 1e-5,
    "block_size": 64,
    "dropout": 0.0,
    "prefix_pad": None,
}
HIDDEN = 192  # int(2 * 4 * 64 / 3) = 170, rounded up to a multiple of 32


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with their names and shapes; the head is the embedding (tied)."""
    generator = torch.Generator().manual_seed(seed)
    dim, head_dim = ARGS["dim"], ARGS["dim"] // ARGS["n_heads"]
    kv = ARGS["n_kv_heads"] * head_dim

    def weight(*shape, norm=False):
        noise = torch.randn(shape, generator=generator)
        return 1 + 0.1 * noise if norm else 0.08 * noise

    state = {"tok_embeddings.weight": weight(ARGS["vocab_size"], dim)}
    for i in range(ARGS["n_layers"]):
        layer = f"layers.{i}."
        state[layer + "attention.wq.weight"] = weight(dim, dim)
        state[layer + "attention.wk.weight"] = weight(kv, dim)
        state[layer + "attention.wv.weight"] = weight(kv, dim)
        state[layer + "attention.wo.weight"] = weight(dim, dim)
        state[layer + "feed_forward.w1.weight"] = weight(HIDDEN, dim)
        state[layer + "feed_forward.w2.weight"] = weight(dim, HIDDEN)
        state[layer + "feed_forward.w3.weight"] = weight(HIDDEN, dim)
        state[layer + "attention_norm.weight"] = weight(dim, norm=True)
        state[layer + "ffn_norm.weight"] = weight(dim, norm=True)
    state["norm.weight"] = weight(dim, norm=True)
    return state


def _rms_norm(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + ARGS["norm_eps"]) * weight


def _rotate_pairs(x, positions):
    """RoPE on adjacent pairs (2i, 2i + 1) of each head, as complex numbers times e^(i t f_i),
    f_i = 10000^(-2i / head_dim)."""
    head_dim = x.shape[-1]
    freqs = 10000.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions[:, None].double() * freqs[None, :]
    rotation = torch.polar(torch.ones_like(angles), angles)[None, :, None, :]
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], head_dim // 2, 2))
    return torch.view_as_real(pairs * rotation).flatten(-2).float()


def reference_logits(state: dict[str, torch.Tensor], tokens: np.ndarray) -> np.ndarray:
    """Their TransformerLM's forward, float32: pre-norm blocks, causal GQA attention, SwiGLU
    (w2(silu(w1 x) * w3 x)), final norm, logits through the tied embedding."""
    tokens = torch.as_tensor(tokens)
    batch, length = tokens.shape
    heads, kv_heads = ARGS["n_heads"], ARGS["n_kv_heads"]
    head_dim = ARGS["dim"] // heads
    positions = torch.arange(length)
    h = state["tok_embeddings.weight"][tokens]
    for i in range(ARGS["n_layers"]):
        p = {k[len(f"layers.{i}.") :]: v for k, v in state.items() if k.startswith(f"layers.{i}.")}
        x = _rms_norm(h, p["attention_norm.weight"])
        q = (x @ p["attention.wq.weight"].T).view(batch, length, heads, head_dim)
        k = (x @ p["attention.wk.weight"].T).view(batch, length, kv_heads, head_dim)
        v = (x @ p["attention.wv.weight"].T).view(batch, length, kv_heads, head_dim)
        q, k = _rotate_pairs(q, positions), _rotate_pairs(k, positions)
        k = k.repeat_interleave(heads // kv_heads, dim=2)
        v = v.repeat_interleave(heads // kv_heads, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / head_dim**0.5
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        weights = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        attended = torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, -1)
        h = h + attended @ p["attention.wo.weight"].T
        x = _rms_norm(h, p["ffn_norm.weight"])
        gate, up = x @ p["feed_forward.w1.weight"].T, x @ p["feed_forward.w3.weight"].T
        h = h + (F.silu(gate) * up) @ p["feed_forward.w2.weight"].T
    h = _rms_norm(h, state["norm.weight"])
    return (h @ state["tok_embeddings.weight"].T).numpy()


def _native_dir(directory: Path, state, args=ARGS) -> Path:
    """Their save_pretrained layout: config.json and model.safetensors, tied head left out."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    config = {
        "format_version": 1,
        "model_type": "slm",
        "architectures": ["TransformerLM"],
        "model_args": args,
        "torch_dtype": "float32",
        "tied_weights": ["tok_embeddings.weight", "output.weight"],
    }
    (directory / "config.json").write_text(json.dumps(config))
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def _training_checkpoint(path: Path, state, extra=None) -> Path:
    """Their training payload: a torch.compile-prefixed state dict whose head shares the
    embedding's storage, optimizer state and the RNG states (numpy arrays among them)."""
    model = {f"_orig_mod.{name}": tensor for name, tensor in state.items()}
    model["_orig_mod.output.weight"] = model["_orig_mod.tok_embeddings.weight"]
    rng = {"python": random.getstate(), "numpy": np.random.get_state()}
    rng |= {"torch": torch.get_rng_state()}
    args = {k: v for k, v in ARGS.items() if k != "block_size"}
    payload = {
        "format_version": 1,
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "params": [0]}]},
        "step": 10,
        "model_args": {**args, "max_block_size": ARGS["block_size"]},
        "rng_by_rank": [{"global": rng, "train": np.random.default_rng(0).bit_generator.state}],
        **(extra or {}),
    }
    torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("slm_scaling")
    state = _state()
    native = import_slm_scaling(_native_dir(root / "native", state), root / "from_native")
    trained = import_slm_scaling(
        _training_checkpoint(root / "checkpoint.pt", state), root / "from_pt"
    )
    return state, native, trained


def _tokens(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 500, size=(2, 40))
    tokens[:, 0] = 500  # EOS, which starts each of their sequences
    return tokens


def test_native_import_matches_their_forward(imported):
    state, native, _ = imported
    lm = jaxslm.load(native)
    assert (lm.vocab.num_units, lm.vocab.bos_id, lm.vocab.eos_ids, lm.vocab.pad_id) == (
        500,
        500,
        (500,),
        501,
    )
    assert lm.vocab.unit_id(0) == 0 and lm.vocab.size == 502
    assert lm.config.intermediate_size == HIDDEN and lm.config.tie_word_embeddings
    tokens = _tokens(0)
    np.testing.assert_allclose(lm.logits(tokens), reference_logits(state, tokens), atol=1e-5)


def test_training_checkpoint_imports_the_same_model(imported):
    state, _, trained = imported
    tokens = _tokens(1)
    np.testing.assert_allclose(
        jaxslm.load(trained).logits(tokens), reference_logits(state, tokens), atol=1e-5
    )


def test_hf_export_runs_in_transformers(imported, tmp_path):
    from transformers import AutoModelForCausalLM

    state, native, _ = imported
    model = AutoModelForCausalLM.from_pretrained(export_hf(native, tmp_path / "hf")).eval()
    assert model.config.model_type == "llama" and model.config.eos_token_id == 500
    tokens = _tokens(2)
    with torch.no_grad():
        logits = model(torch.as_tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(logits, reference_logits(state, tokens), atol=1e-5)


def test_refusals(tmp_path, capsys):
    state = _state()
    prefixed = _native_dir(tmp_path / "prefix", state, {**ARGS, "prefix_vocab_size": 8})
    with pytest.raises(JaxslmError, match="prefix-embedding table"):
        import_slm_scaling(prefixed, tmp_path / "out")
    unsafe = _training_checkpoint(tmp_path / "unsafe.pt", state, {"where": Path("/tmp")})
    assert convert_main(["import-slm-scaling", str(unsafe), str(tmp_path / "out")]) == 2
    assert "weights_only=True" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(JaxslmError, match="vocab_size - 2 or vocab_size - 1"):
        import_slm_scaling(_native_dir(tmp_path / "n", state), tmp_path / "o", speech_units=400)
