"""Tiny random HF models built with torch and transformers (the oracles), and jaxslm variants
of imported ones. Only the tests that compare against PyTorch import this module."""

import numpy as np
import torch

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


def randomize(model: torch.nn.Module, seed: int, scale: float = 0.08) -> None:
    """Random weights large enough that every parameter moves the outputs: norms near 1,
    other weights N(0, scale)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1 + 0.1 * noise if "norm" in name else scale * noise)


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


def torch_logits(model, tokens) -> np.ndarray:
    """Float32 logits of a HF model on int tokens [B, T]."""
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


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
    randomize(model, seed=0, scale=scale)
    return model


def with_config(lm, **changes):
    """A SpeechLM with `lm`'s parameters under a changed ModelConfig (layer execution, dtypes,
    attention kernel)."""
    from flax import nnx

    from jaxslm.api import SpeechLM
    from jaxslm.models.decoder import abstract_decoder

    graphdef = nnx.graphdef(abstract_decoder(lm.config.replace(**changes)))
    return SpeechLM(nnx.merge(graphdef, nnx.state(lm.model)), lm.vocab, lm.mesh)
