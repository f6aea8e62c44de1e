"""The public model object: `jaxslm.load(CKPT_DIR)` -> SpeechLM."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxslm import backend
from jaxslm.errors import JaxslmError
from jaxslm.evals.compat import SlamkitRules, check_compat
from jaxslm.evals.scorer import Scorer
from jaxslm.model_dir import abstract_params, load_tokenizer, read_metadata, restore_params
from jaxslm.models.decoder import Decoder, abstract_decoder, param_axes
from jaxslm.models.model_config import ModelConfig
from jaxslm.sharding import BATCH_AXES, mesh_context, place, tree_shardings
from jaxslm.vocab import SpeechVocab


class SpeechLM:
    """A decoder with its speech vocabulary, placed on one device or sharded over a mesh;
    `checkpoint` is the directory it was loaded from (its text tokenizer is read from there)."""

    def __init__(
        self,
        model: Decoder,
        vocab: SpeechVocab,
        mesh: Mesh | None = None,
        checkpoint: str | Path | None = None,
    ):
        self.model = model
        self.vocab = vocab
        self.mesh = mesh
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self._graphdef, self._params = nnx.split(model)
        self._forward = jax.jit(_forward, static_argnums=0)
        self._scorers: dict[str, Scorer] = {}
        self._generator = None

    @property
    def config(self) -> ModelConfig:
        """The model config (vocab_size is the real vocabulary V)."""
        return self.model.config

    def logits(self, tokens, segment_ids=None, positions=None) -> np.ndarray:
        """Float32 logits [B, T, V] for token ids [B, T].

        `segment_ids` (0 = padding) keep packed documents apart; `positions` restart per
        document. Both default to one document per row.
        """
        tokens = self._check_tokens(tokens)
        batch, length = tokens.shape
        if segment_ids is None:
            segment_ids = np.ones_like(tokens)
        if positions is None:
            positions = np.broadcast_to(np.arange(length, dtype=np.int32), tokens.shape)
        inputs = [np.asarray(a, np.int32) for a in (tokens, positions, segment_ids)]
        for name, array in zip(("positions", "segment_ids"), inputs[1:], strict=True):
            if array.shape != tokens.shape:
                raise JaxslmError(f"{name} has shape {array.shape}, tokens {tokens.shape}")
        placed = [place(a, BATCH_AXES, self.mesh) for a in inputs]
        with mesh_context(self.mesh):
            logits = self._forward(self._graphdef, self._params, *placed)
        return np.asarray(logits[..., : self.vocab.size])

    def log_likelihood(
        self,
        sequences,
        normalize: str = "mean",
        modality: str | None = None,
        compat: str = "jaxslm",
    ):
        """Log-likelihood of each token-id list (BOS included by the caller), as slamkit scores:
        every next-token target counts; `normalize` "mean" divides by their number, "sum" does
        not; `modality` "speech" or "text" renormalises the softmax over that modality's tokens.
        `compat` "slamkit" applies slamkit's own rules (`jaxslm.evals.compat`): targets equal
        to id 0 do not count, and its modality restriction. Returns float64 [N].
        """
        if compat not in self._scorers:
            self._scorers[compat] = self.make_scorer(compat=compat)
        return self._scorers[compat].log_likelihood(sequences, normalize, modality)

    def make_scorer(self, batch_tokens: int | None = None, compat: str = "jaxslm") -> Scorer:
        """A log-likelihood scorer over this model that batches about `batch_tokens` tokens
        (None: `jaxslm.backend.scorer_batch_tokens()`, 1024 on CPU and 16384 elsewhere), with
        jaxslm's or slamkit's scoring rules (`compat`)."""
        rules = None
        if check_compat(compat) == "slamkit":
            rules = SlamkitRules.for_model(self.vocab, self._tokenizer())
        padded = self.config.padded_vocab_size
        return Scorer(
            self._graphdef, self._params, self.vocab, padded, self.mesh, batch_tokens, slamkit=rules
        )

    def _tokenizer(self):
        if self.vocab.mode == "speech-only":
            return None
        if self.checkpoint is None:
            raise JaxslmError(
                "this SpeechLM has no checkpoint to read its text tokenizer from; load it with "
                "jaxslm.load(CKPT_DIR)"
            )
        return load_tokenizer(self.checkpoint, self.vocab)

    def generate(
        self,
        prompts,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        modality: str | None = None,
        seed: int = 0,
        repetition_penalty: float = 1.0,
    ) -> list[list[int]]:
        """Continue each token-id prompt (BOS and markers included by the caller) with KV-cache
        decoding; returns the generated ids per prompt, prompt excluded, a final EOS included.
        Temperature 0 is greedy; `modality` bans the other modality's tokens."""
        from jaxslm.generation.decode import Generator, Sampling

        if self._generator is None:
            self._generator = Generator(
                self._graphdef, self._params, self.vocab, self.config, self.mesh
            )
        sampling = Sampling(temperature, top_k, top_p, repetition_penalty)
        return self._generator.generate(prompts, max_new_tokens, sampling, modality, seed)

    def _check_tokens(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
            raise JaxslmError(f"tokens must be integer ids [batch, length], got {tokens.shape}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab.size):
            raise JaxslmError(
                f"token ids must lie in [0, {self.vocab.size}); got {tokens.min()}..{tokens.max()}"
            )
        return tokens


def _forward(graphdef, params, tokens, positions, segment_ids):
    model = nnx.merge(graphdef, params)
    return model(tokens, positions, segment_ids)


def load(
    ckpt_dir: str | Path,
    mesh: Mesh | None = None,
    compute_dtype: str | None = None,
    attention: str = "auto",
) -> SpeechLM:
    """Load a jaxslm checkpoint; with `mesh`, parameters are sharded by the logical rules,
    else they go to `jaxslm.backend.compute_device()` (the GPU on a GPU machine), where every
    call of the SpeechLM then computes. `attention` picks the kernel on this machine, whatever
    the run that saved it used (see jaxslm.backend)."""
    cfg, vocab, _ = read_metadata(ckpt_dir)
    cfg = cfg.replace(attention=attention)
    if compute_dtype is not None:
        cfg = cfg.replace(dtype=compute_dtype)
    abstract = abstract_decoder(cfg)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(backend.compute_device())
        shardings = jax.tree.map(lambda _: device, abstract_params(cfg))
    else:
        shapes = jax.tree.map(lambda leaf: leaf.shape, abstract_params(cfg))
        shardings = tree_shardings(mesh, param_axes(abstract), shapes)
    params = restore_params(ckpt_dir, cfg, shardings)
    nnx.update(abstract, params)
    return SpeechLM(abstract, vocab, mesh, checkpoint=ckpt_dir)
