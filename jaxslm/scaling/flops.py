"""Parameter and FLOP accounting for MFU and compute budgets (docs/reference.md section 7).

Conventions, stated once and used everywhere:

- Vocabulary: the real `vocab_size`, never the padded embedding rows (padding is a layout
  detail of the implementation, not model capacity).
- Matmul parameters: every attention and MLP projection kernel of every layer plus the LM head
  (for tied models the embedding matrix, counted once, as the head). The embedding lookup is a
  gather, not a matmul, so an untied model's input table is excluded; biases and norm scales
  are elementwise and excluded too.
- Forward FLOPs: 2 x tokens x matmul parameters, plus per layer 2 x B x S^2 x H x Dh for
  attention (QK^T and AV are 4 B S^2 H Dh together; causal masking halves that: MaxText's
  convention). Softmax, norms, activations and the loss are not counted.
- Training FLOPs: 3 x forward (backward = 2 x forward); rematerialisation is not counted, so
  MFU here is model FLOPs utilisation, not hardware FLOPs utilisation.
"""

from __future__ import annotations

from jaxslm.models.model_config import ModelConfig

# Dense (non-sparse) 16-bit tensor-core / MXU peaks, FLOP/s per device, from vendor datasheets.
# Matched against jax's `device.device_kind`, lower-cased, in order: the first substring wins.
BF16_PEAKS: tuple[tuple[str, float], ...] = (
    ("h100 pcie", 756e12),
    ("h100 nvl", 835e12),
    ("h100", 989e12),  # SXM, e.g. "NVIDIA H100 80GB HBM3"
    ("h200", 989e12),
    ("h800", 989e12),
    ("a100", 312e12),  # "NVIDIA A100-SXM4-80GB", "NVIDIA A100-PCIE-40GB"
    ("tpu v4", 275e12),
    ("tpu v5 lite", 197e12),  # v5e
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),  # older jax reports v5p as "TPU v5"
    ("tpu v6 lite", 918e12),  # v6e (Trillium)
)
SIXTEEN_BIT = ("bfloat16", "float16")


def _layer_matmul_params(cfg: ModelConfig) -> int:
    attention = cfg.hidden_size * cfg.head_dim * (2 * cfg.num_heads + 2 * cfg.num_kv_heads)
    mlp = 3 * cfg.hidden_size * cfg.intermediate_size
    return attention + mlp


def matmul_params(cfg: ModelConfig) -> int:
    """Weights one token multiplies through: all layers' projections + the LM head (real vocab).

    A tied model's embedding counts once, as the head; the embedding lookup never counts.
    """
    return cfg.num_layers * _layer_matmul_params(cfg) + cfg.vocab_size * cfg.hidden_size


def param_count(cfg: ModelConfig, include_embedding: bool = True) -> int:
    """All parameters (biases and norm scales included) with the real vocabulary size.

    With `include_embedding=False` the vocabulary matrices (embedding and, if untied, the LM
    head) are left out: Kaplan et al.'s "non-embedding" count.
    """
    e, kv_width = cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim
    layer = _layer_matmul_params(cfg) + 2 * e  # + the two RMSNorm scales
    if cfg.qkv_bias:
        layer += cfg.num_heads * cfg.head_dim + 2 * kv_width
    if cfg.out_bias:
        layer += e
    if cfg.mlp_bias:
        layer += 2 * cfg.intermediate_size + e
    body = cfg.num_layers * layer + e  # + final norm
    if not include_embedding:
        return body
    tables = 1 if cfg.tie_word_embeddings else 2
    return body + tables * cfg.vocab_size * e


def forward_flops(cfg: ModelConfig, batch: int, seq_len: int) -> float:
    """Model FLOPs of one forward pass over [batch, seq_len] tokens (causal attention halved)."""
    tokens = batch * seq_len
    attention = cfg.num_layers * 2 * batch * seq_len**2 * cfg.num_heads * cfg.head_dim
    return float(2 * tokens * matmul_params(cfg) + attention)


def train_flops(cfg: ModelConfig, batch: int, seq_len: int) -> float:
    """Model FLOPs of one training step (forward + backward = 3 x forward)."""
    return 3 * forward_flops(cfg, batch, seq_len)


def nanogpt_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token by nanoGPT's (PaLM's) estimate, which Cuervo & Marxer's MFU
    figures use: 6 N + 12 L H Q T, N every parameter (a tied table once, norms included), Q the
    head size and T the context; attention counted whole, not causally halved."""
    attention = 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len
    return float(6 * param_count(cfg) + attention)


def peak_flops_per_device(device_kind: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of one accelerator for `dtype` matmuls, or None when unknown.

    Only 16-bit peaks are listed; float32 returns None because its effective peak depends on
    whether matmuls run as TF32 (JAX's GPU default) or in full precision (PyTorch's default).
    CPUs and unlisted devices return None.
    """
    if dtype not in SIXTEEN_BIT:
        return None
    kind = device_kind.lower()
    return next((peak for key, peak in BF16_PEAKS if key in kind), None)


def mfu(tokens_per_second: float, cfg: ModelConfig, seq_len: int, peak_total: float) -> float:
    """Model FLOPs utilisation of training at `tokens_per_second` against `peak_total` FLOP/s.

    `peak_total` is the summed peak of all devices doing the work.
    """
    flops_per_token = train_flops(cfg, 1, seq_len) / seq_len
    return tokens_per_second * flops_per_token / peak_total
