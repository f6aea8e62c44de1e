"""Shared fixtures: tiny random HF models (the oracle) saved to temporary folders, imported once.

Eight virtual CPU devices are configured before jax is imported so that sharding tests can
build a data x fsdp x tensor mesh in this process.
"""

import os
import subprocess
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers  # noqa: E402

from jaxslm.hf.importer import import_hf  # noqa: E402

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
QWEN_EOS = "<|endoftext|>"
CORPUS = [
    "the cat sat on the mat and the dog ran to the park",
    "speech language models learn from units and from text",
    "a small model can still learn the shape of a language",
    "every word carries its own leading space in the alignment",
] * 4


def build_tokenizer(directory, llama_style: bool = True):
    """A byte-level BPE tokenizer of a few hundred entries, saved as HF files in `directory`.

    Llama style adds BOS and names BOS/EOS; Qwen style adds nothing and has `<|endoftext|>`.
    """
    from transformers import PreTrainedTokenizerFast

    specials = [BOS, EOS] if llama_style else [QWEN_EOS, "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    if not llama_style:
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, eos_token=QWEN_EOS, pad_token=QWEN_EOS
        )
        fast.save_pretrained(directory)
        return fast
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS)
    fast.save_pretrained(directory)
    return fast


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random weights large enough that every parameter moves the logits (norms near 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1 + 0.1 * noise if "norm" in name else 0.08 * noise)


TINY_SHAPE = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=0,
    eos_token_id=1,
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def llama_config(vocab_size: int):
    """Llama 3 style: explicit head_dim, llama3 RoPE scaling (exercised past 64), tied."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        head_dim=16,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        rope_scaling=LLAMA3_ROPE,
        **TINY_SHAPE,
    )


def qwen_config(vocab_size: int):
    """Qwen2 style: q/k/v biases, rope theta 1e6, untied."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size,
        rms_norm_eps=1e-6,
        rope_theta=1e6,
        tie_word_embeddings=False,
        **TINY_SHAPE,
    )


def save_hf_model(config, directory, seed: int, dtype=torch.float32):
    """Build, randomize and save a HF causal LM; returns the model (float32, eval mode)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    randomize(model, seed)
    model.to(dtype).save_pretrained(directory)
    return model.float()


@pytest.fixture(scope="session")
def llama_hf(tmp_path_factory):
    """(directory, torch model) of a tiny Llama-3 style model: GQA, llama3 rope, tied."""
    directory = tmp_path_factory.mktemp("llama_hf")
    tokenizer = build_tokenizer(directory)
    return directory, save_hf_model(llama_config(len(tokenizer)), directory, seed=1)


@pytest.fixture(scope="session")
def qwen_hf(tmp_path_factory):
    """(directory, torch model) of a tiny Qwen2 style model: biases, untied, padded vocab."""
    directory = tmp_path_factory.mktemp("qwen_hf")
    tokenizer = build_tokenizer(directory, llama_style=False)
    return directory, save_hf_model(qwen_config(len(tokenizer) + 37), directory, seed=2)


@pytest.fixture(scope="session")
def llama_ckpt(llama_hf, tmp_path_factory):
    """The tiny Llama imported with 20 speech units (interleaved)."""
    return import_hf(llama_hf[0], tmp_path_factory.mktemp("ckpt") / "llama", speech_units=20)


@pytest.fixture(scope="session")
def qwen_ckpt(qwen_hf, tmp_path_factory):
    """The tiny Qwen2 imported with 50 speech units (interleaved; more than its spare rows)."""
    return import_hf(qwen_hf[0], tmp_path_factory.mktemp("ckpt") / "qwen", speech_units=50)


@pytest.fixture(scope="session")
def llama_lm(llama_ckpt):
    import jaxslm

    return jaxslm.load(llama_ckpt)


@pytest.fixture(scope="session")
def qwen_lm(qwen_ckpt):
    import jaxslm

    return jaxslm.load(qwen_ckpt)


def torch_logits(model, tokens) -> np.ndarray:
    """Float32 logits of a HF model on int tokens [B, T]."""
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


def with_config(lm, **changes):
    """A SpeechLM with `lm`'s parameters under a changed ModelConfig (layer execution, dtypes,
    attention kernel)."""
    from flax import nnx

    from jaxslm.api import SpeechLM
    from jaxslm.models.decoder import abstract_decoder

    graphdef = nnx.graphdef(abstract_decoder(lm.config.replace(**changes)))
    return SpeechLM(nnx.merge(graphdef, nnx.state(lm.model)), lm.vocab, lm.mesh)


def kill_once_writing(script: str, argv: list[str]) -> None:
    """Run `python -c script *argv` on this checkout's jaxslm until it prints a line starting
    with 'writing', then SIGKILL it, so it cannot clean up after itself."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-c", script, *argv]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        assert any(line.startswith(b"writing") for line in process.stdout)  # among TFDS's lines
    finally:
        process.kill()
        process.wait(timeout=60)


def tiny_hubert(scale: float):
    """A tiny random HubertModel, HuBERT-base layout (GroupNorm over time, 50 Hz frames, 32
    wide): norms near 1, other weights N(0, scale)."""
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 3, 3),
        conv_stride=(5, 4, 16),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
    )
    torch.manual_seed(0)
    model = HubertModel(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1 + 0.1 * noise if "norm" in name else scale * noise)
    return model
