"""Incremental decoding with a preallocated KV cache: one prefill over the padded prompts,
then one token per row per step inside a jitted `while_loop` that stops when every row has
emitted EOS or its budget. The loop looks at that condition every `jaxslm.backend.
decode_check_every()` tokens (each look is a host round trip on GPUs), decoding that many
tokens per iteration in an inner loop of known length. One compilation per (rows, prompt
length, cache length, budget, sampling settings) bucket; prompts and row counts are padded to
powers of two.

Each step reads every layer's weights once, so they are kept in the compute dtype (cast once
when the Generator is made, not in every step), and the layers run as `jaxslm.backend.
decode_layers()` says (a scanned loop or unrolled). One call is one device program and one
read-back of its results."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxslm import backend
from jaxslm.errors import JaxslmError
from jaxslm.models.decoder import abstract_decoder, split_layers
from jaxslm.models.head import OutputColumns, output_columns
from jaxslm.models.model_config import ModelConfig
from jaxslm.sharding import (
    BATCH_AXES,
    constrain,
    mesh_context,
    place,
    power_of_two_at_least,
    replicate,
    round_up,
)
from jaxslm.vocab import SpeechVocab, allowed_tokens

CACHE_AXES = ("layers", "batch", "kv_heads", "length", "head_dim")
MIN_PROMPT_BUCKET = 16


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. Temperature 0 is greedy. As transformers applies them:
    repetition penalty, then temperature, top-k, top-p, then a draw from the softmax."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise JaxslmError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise JaxslmError(f"top_k must be a positive integer or None, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise JaxslmError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise JaxslmError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


class Generator:
    """Generates continuations of token-id prompts with one model (optionally on a mesh)."""

    def __init__(
        self,
        graphdef: nnx.GraphDef,
        params,
        vocab: SpeechVocab,
        config: ModelConfig,
        mesh: Mesh | None = None,
    ):
        if backend.decode_layers() == "unrolled" and config.scan_layers:
            graphdef = nnx.graphdef(abstract_decoder(config.replace(scan_layers=False)))
        self.graphdef, self.params, self.vocab, self.config, self.mesh = (
            graphdef,
            in_compute_dtype(params, jnp.dtype(config.dtype)),
            vocab,
            config,
            mesh,
        )
        out = None if mesh is None else NamedSharding(mesh, PartitionSpec())
        # "split": the layers' weights as separate arrays, a second copy of them in memory
        self.split = split_layers(self.params) if backend.decode_layers() == "split" else None
        self.check_every = backend.decode_check_every()
        self._decode = jax.jit(_decode, static_argnums=(0, 7, 8, 9, 10), out_shardings=out)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        sampling: Sampling = Sampling(),
        modality: str | None = None,
        seed: int = 0,
    ) -> list[list[int]]:
        """Generated ids per prompt (prompt excluded; a final EOS included, as transformers).

        `modality` "speech" or "text" bans the other modality's tokens (slamkit's rule: speech
        keeps units and the tokenizer's BOS/EOS; text bans units). When that keeps at most half
        of the vocabulary, only the kept rows of the output projection are computed, and tokens
        are chosen among them.
        """
        arrays = self._check(prompts, max_new_tokens)
        rows = power_of_two_at_least(len(arrays))
        prompt_length = max(MIN_PROMPT_BUCKET, power_of_two_at_least(max(a.size for a in arrays)))
        cache_length = round_up(prompt_length + max_new_tokens, 64)
        tokens = np.zeros((rows, prompt_length), np.int32)
        lengths = np.ones(rows, np.int32)
        active = np.arange(rows) < len(arrays)  # rows past the prompts pad the batch
        for row, ids in enumerate(arrays):
            tokens[row, : ids.size] = ids
            lengths[row] = ids.size
        padded = self.config.padded_vocab_size
        output = output_columns(allowed_tokens(self.vocab, modality, padded))
        eos = np.zeros(padded, bool)
        eos[list(self.vocab.eos_ids)] = True
        mesh = self.mesh
        inputs = (
            place(tokens, BATCH_AXES, mesh),
            place(lengths, ("batch",), mesh),
            place(active, ("batch",), mesh),
            replicate(output, mesh),
            replicate(output.at_columns(eos) & output.valid, mesh),
        )
        static = (max_new_tokens, cache_length, sampling, self.check_every)
        with mesh_context(mesh):
            out, counts = self._decode(
                self.graphdef, self.params, *inputs, *static, jax.random.key(seed), self.split
            )
        out, counts = jax.device_get((out, counts))
        return [out[row, : counts[row]].tolist() for row in range(len(arrays))]

    def _check(self, prompts, max_new_tokens: int) -> list[np.ndarray]:
        if max_new_tokens < 1:
            raise JaxslmError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if not prompts:
            raise JaxslmError("no prompts given")
        arrays = []
        context = self.config.max_position_embeddings
        for index, prompt in enumerate(prompts):
            ids = np.asarray(prompt, np.int64)
            if ids.ndim != 1 or ids.size == 0:
                raise JaxslmError(f"prompt {index} is empty; give at least one token id")
            if ids.min() < 0 or ids.max() >= self.vocab.size:
                raise JaxslmError(
                    f"prompt {index} holds ids {ids.min()}..{ids.max()}, outside the vocabulary "
                    f"[0, {self.vocab.size})"
                )
            if ids.size + max_new_tokens > context:
                raise JaxslmError(
                    f"prompt {index} has {ids.size} tokens; with {max_new_tokens} new tokens it "
                    f"passes the model's context of {context}; shorten the prompt or ask for "
                    "fewer tokens"
                )
            arrays.append(ids.astype(np.int32))
        return arrays


def in_compute_dtype(params, dtype: jnp.dtype):
    """`params` with every floating array wider than `dtype` cast to it (on its device). The
    decoder casts each weight to the compute dtype where it uses it, so the values it computes
    with are the same; a decoding step then reads each weight once, in the narrower dtype."""

    def cast(leaf):
        kind = getattr(leaf, "dtype", None)
        floating = kind is not None and jnp.issubdtype(kind, jnp.floating)
        return leaf.astype(dtype) if floating and kind.itemsize > dtype.itemsize else leaf

    return jax.tree.map(cast, params)


def _choose(logits, seen, valid, sampling: Sampling, key):
    """The next column per row from float32 logits [B, K] over the K candidate columns; `seen`
    [B, K] (the columns already in each row) is read only under a repetition penalty."""
    logits = jnp.where(valid, logits, -jnp.inf)
    if sampling.repetition_penalty != 1.0:
        penalized = jnp.where(
            logits < 0, logits * sampling.repetition_penalty, logits / sampling.repetition_penalty
        )
        logits = jnp.where(seen, penalized, logits)
    if sampling.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / sampling.temperature
    if sampling.top_k is not None:
        k = min(sampling.top_k, logits.shape[-1])  # as transformers: k past the columns keeps all
        kth = jax.lax.top_k(logits, k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        drop_sorted = mass_before >= sampling.top_p
        drop = (
            jnp.zeros_like(drop_sorted)
            .at[jnp.arange(logits.shape[0])[:, None], order]
            .set(drop_sorted)
        )
        logits = jnp.where(drop, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _decode(
    graphdef,
    params,
    tokens,
    lengths,
    active,
    output: OutputColumns,
    eos,
    max_new,
    cache_length,
    sampling,
    check_every,
    key,
    split,
):
    """(generated [B, max_new] int32, count per row) for right-padded prompts; rows not
    `active` [B] pad the batch and count as done from the start.

    Tokens are chosen among the `output` columns [K] (those it marks valid may be chosen;
    `eos` [K] marks the EOS columns). The loop's condition is evaluated every `check_every`
    steps; steps past a row's end change nothing of its output.
    """
    model = nnx.merge(graphdef, params)
    cfg = model.config
    rows, prompt_length = tokens.shape
    dtype = jnp.dtype(cfg.dtype)
    layers = 1 if split is not None else cfg.num_layers
    shape = (layers, rows, cfg.num_kv_heads, cache_length, cfg.head_dim)

    def keys_and_values():
        return tuple(constrain(jnp.zeros(shape, dtype), CACHE_AXES) for _ in range(2))

    # stacked (keys, values), or with split layers one (keys, values) per layer
    cache = keys_and_values() if split is None else tuple(keys_and_values() for _ in split)
    slots = jnp.arange(cache_length, dtype=jnp.int32)
    prompt_index = jnp.arange(prompt_length, dtype=jnp.int32)
    positions = jnp.broadcast_to(prompt_index, tokens.shape)
    in_prompt = (prompt_index[None, :] < lengths[:, None]).astype(jnp.int32)
    hidden, cache = model.prefill(tokens, positions, in_prompt, cache, split)
    last = jnp.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)
    logits = output.logits(model, last)[:, 0]
    width = output.width
    penalized = sampling.repetition_penalty != 1.0
    seen = None
    if penalized:  # kept only when read: a [rows, K] update per step otherwise wasted
        prompt_columns = output.column_of(tokens)
        prompt_columns = jnp.where(prompt_columns < 0, width, prompt_columns)  # dropped below
        seen = jnp.zeros((rows, width), jnp.int32)
        seen = seen.at[jnp.arange(rows)[:, None], prompt_columns].max(in_prompt, mode="drop") > 0
    state = {
        "step": jnp.int32(0),
        "logits": logits,
        "cache": cache,
        "seen": seen,
        "done": ~active,
        "counts": jnp.zeros(rows, jnp.int32),
        "out": jnp.zeros((rows, round_up(max_new, check_every)), jnp.int32),
    }

    def running(state):
        return (state["step"] < max_new) & ~jnp.all(state["done"])

    def step(state, window: int):
        t = state["step"]
        column = _choose(
            state["logits"], state["seen"], output.valid, sampling, jax.random.fold_in(key, t)
        )
        done = state["done"] | (t >= max_new)  # past the budget inside the last block
        token = jnp.where(done, 0, output.token_of(column))
        counts = state["counts"] + (~done).astype(jnp.int32)
        done = done | eos[column]
        seen = state["seen"]
        if penalized:
            seen = seen.at[jnp.arange(rows), column].set(True)
        slot = (lengths + t)[:, None]
        mask = slots[None, None, :window] <= slot[:, :, None]
        hidden, cache = model.extend(token[:, None], slot, slot, mask, state["cache"], split)
        return {
            "step": t + 1,
            "logits": output.logits(model, hidden)[:, 0],
            "cache": cache,
            "seen": seen,
            "done": done,
            "counts": counts,
            "out": state["out"].at[:, t].set(token),
        }

    def block(state, window: int):
        if check_every == 1:
            return step(state, window)
        return jax.lax.scan(lambda s, _: (step(s, window), None), state, length=check_every)[0]

    # Phases of growing attention windows: each block of steps attends over the first
    # `window` cache slots only, as long as every row's new slots lie inside them; the last
    # phase attends over the whole cache.
    longest = jnp.max(lengths)
    # split layers attend over each layer's whole cache: a window would be a copied slice
    windows = attention_windows(prompt_length, cache_length) if split is None else [cache_length]
    for window in windows:
        fits = window == windows[-1]
        state = jax.lax.while_loop(
            lambda state, window=window, fits=fits: (
                running(state) & (fits | (longest + state["step"] + check_every <= window))
            ),
            functools.partial(block, window=window),
            state,
        )
    return state["out"][:, :max_new], state["counts"]


def attention_windows(prompt_length: int, cache_length: int) -> list[int]:
    """Cache slots attended in each decoding phase: 64 x powers of two above the prompt
    bucket, then the whole cache."""
    windows, window = [], 64
    while window < cache_length:
        if window > prompt_length:
            windows.append(window)
        window *= 2
    return [*windows, cache_length]
