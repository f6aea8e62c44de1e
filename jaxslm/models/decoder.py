"""The Llama / Qwen2 decoder in Flax NNX, with stacked layers run by `jax.lax.scan`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from jaxslm.models.attention import Segments, attention
from jaxslm.models.attention_xla import dot_product_attention
from jaxslm.models.layers import Dense, Embed, RMSNorm, logits_against
from jaxslm.models.model_config import ModelConfig
from jaxslm.models.rope import apply_rope, inverse_frequencies
from jaxslm.sharding import constrain

ACTIVATION_AXES = ("batch", "length", "embed")
# Named layer activations that `remat: save_projections` keeps for the backward pass: the
# projections' outputs and the attention's result, so the backward pass recomputes only norms,
# RoPE, the attention's softmax and the SwiGLU product.
SAVED_PROJECTIONS = ("query", "key", "value", "attention", "attention_out", "mlp_gate", "mlp_up")
REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_projections": jax.checkpoint_policies.save_only_these_names(*SAVED_PROJECTIONS),
}


def _dense(cfg: ModelConfig, rngs: nnx.Rngs, in_shape, out_shape, axes, use_bias: bool) -> Dense:
    return Dense(
        in_shape,
        out_shape,
        axes,
        use_bias=use_bias,
        std=cfg.initializer_range,
        param_dtype=jnp.dtype(cfg.param_dtype),
        dtype=jnp.dtype(cfg.dtype),
        rngs=rngs,
    )


class Attention(nnx.Module):
    """Grouped-query self-attention with RoPE."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        e, h, kv, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.kernel = cfg.attention
        self.q = _dense(cfg, rngs, (e,), (h, d), ("embed", "heads", "head_dim"), cfg.qkv_bias)
        self.k = _dense(cfg, rngs, (e,), (kv, d), ("embed", "kv_heads", "head_dim"), cfg.qkv_bias)
        self.v = _dense(cfg, rngs, (e,), (kv, d), ("embed", "kv_heads", "head_dim"), cfg.qkv_bias)
        self.o = _dense(cfg, rngs, (h, d), (e,), ("heads", "head_dim", "embed"), cfg.out_bias)

    def _project(self, x, positions, inv_freq):
        query = checkpoint_name(apply_rope(self.q(x), positions, inv_freq), "query")
        key = checkpoint_name(apply_rope(self.k(x), positions, inv_freq), "key")
        return query, key, checkpoint_name(self.v(x), "value")

    def _output(self, attended):
        return checkpoint_name(self.o(checkpoint_name(attended, "attention")), "attention_out")

    def _attend_within(self, x, positions, segments: Segments, inv_freq):
        """(output, keys, values) of causal self-attention within `segments`."""
        query, key, value = self._project(x, positions, inv_freq)
        attended = attention(query, key, value, segments, kernel=self.kernel)
        return self._output(attended), key, value

    def __call__(self, x, positions, segments: Segments, inv_freq):
        """Causal self-attention within `segments` (packed rows), through the kernel seam."""
        return self._attend_within(x, positions, segments, inv_freq)[0]

    def prefill(self, x, positions, segments: Segments, inv_freq, cache):
        """`__call__` over a prompt whose keys and values are also written into this layer's
        slots 0..T-1 of `cache` = (keys, values [layers, B, KV, S, D], layer index)."""
        out, key, value = self._attend_within(x, positions, segments, inv_freq)
        keys, values, layer = cache
        length = x.shape[1]
        keys = keys.at[layer, :, :, :length].set(key.swapaxes(1, 2).astype(keys.dtype))
        values = values.at[layer, :, :, :length].set(value.swapaxes(1, 2).astype(values.dtype))
        return out, (keys, values, layer)

    def extend(self, x, positions, slots, mask, inv_freq, cache):
        """New tokens [B, T] whose keys and values are written at `slots` [B, T] of this
        layer's cache (in place: only B x T entries change); the queries attend over the
        layer's first S' slots, S' being the width of `mask` [B, T, S']."""
        query, key, value = self._project(x, positions, inv_freq)
        keys, values, layer = cache
        rows = jnp.arange(x.shape[0])[:, None]
        keys = keys.at[layer, rows, :, slots].set(key.astype(keys.dtype))
        values = values.at[layer, rows, :, slots].set(value.astype(values.dtype))
        window = mask.shape[-1]  # a narrower mask attends over the first slots only
        keys_seen, values_seen = keys[layer][:, :, :window], values[layer][:, :, :window]
        attended = dot_product_attention(query, keys_seen, values_seen, mask, "bksd")
        return self._output(attended), (keys, values, layer)


class MLP(nnx.Module):
    """SwiGLU feed-forward block."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        e, m = cfg.hidden_size, cfg.intermediate_size
        self.gate = _dense(cfg, rngs, (e,), (m,), ("embed", "mlp"), cfg.mlp_bias)
        self.up = _dense(cfg, rngs, (e,), (m,), ("embed", "mlp"), cfg.mlp_bias)
        self.down = _dense(cfg, rngs, (m,), (e,), ("mlp", "embed"), cfg.mlp_bias)

    def __call__(self, x):
        gate = checkpoint_name(self.gate(x), "mlp_gate")
        return self.down(jax.nn.silu(gate) * checkpoint_name(self.up(x), "mlp_up"))


class Block(nnx.Module):
    """Pre-norm transformer layer: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        param_dtype = jnp.dtype(cfg.param_dtype)
        self.attn_norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        self.attn = Attention(cfg, rngs)
        self.mlp_norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x, positions, segments: Segments, inv_freq):
        return self._residuals(x, self.attn(self.attn_norm(x), positions, segments, inv_freq))

    def prefill(self, x, positions, segments: Segments, inv_freq, cache):
        """The layer over a prompt, filling the KV cache (see `Attention.prefill`)."""
        attended, cache = self.attn.prefill(self.attn_norm(x), positions, segments, inv_freq, cache)
        return self._residuals(x, attended), cache

    def extend(self, x, positions, slots, mask, inv_freq, cache):
        """The layer over new tokens with a KV cache (see `Attention.extend`)."""
        attended, cache = self.attn.extend(
            self.attn_norm(x), positions, slots, mask, inv_freq, cache
        )
        return self._residuals(x, attended), cache

    def _residuals(self, x, attended):
        """The layer's output from its input and the attention's output."""
        x = x + attended
        x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, ACTIVATION_AXES)


class Decoder(nnx.Module):
    """Token ids -> float32 logits over the padded vocabulary (padding rows masked to -inf).

    `layers` holds every Block's parameters stacked on a leading `layers` axis.
    """

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.config = cfg
        param_dtype, dtype = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)
        self.embed = Embed(
            cfg.padded_vocab_size,
            cfg.hidden_size,
            std=cfg.initializer_range,
            param_dtype=param_dtype,
            dtype=dtype,
            rngs=rngs,
        )

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=0, out_axes=0)
        def make_layers(rngs: nnx.Rngs) -> Block:
            return Block(cfg, rngs)

        self.layers = make_layers(rngs)
        self.final_norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        self.lm_head = (
            None
            if cfg.tie_word_embeddings
            else _dense(
                cfg,
                rngs,
                (cfg.hidden_size,),
                (cfg.padded_vocab_size,),
                ("embed", "vocab"),
                use_bias=False,
            )
        )

    def hidden_states(self, tokens, positions, segment_ids, branch_ids=None):
        """Final-norm hidden states [B, T, embed] in the compute dtype; `branch_ids` limits
        attention within a segment to its trunk and the query's own branch."""
        segments = Segments(segment_ids, branch_ids)
        inv_freq = self._inv_freq()

        def run_layer(block, x, _):
            return block(x, positions, segments, inv_freq), None

        return self._run_layers(run_layer, tokens, None, remat=self.config.remat)[0]

    def prefill(self, tokens, positions, segment_ids, cache, split=None):
        """Final-norm hidden states of prompts [B, T] (right-padded: `segment_ids` 1 on prompt
        tokens, 0 on padding) and the KV cache with the prompts' keys and values in slots
        0..T-1: (keys, values [layers, B, KV, S, D]), or with `split` (`split_layers` of the
        layer parameters) one (keys, values [1, B, KV, S, D]) per layer."""
        segments = Segments(segment_ids)
        inv_freq = self._inv_freq()

        def run_layer(block, x, cache):
            return block.prefill(x, positions, segments, inv_freq, cache)

        return self._cached(run_layer, tokens, cache, split)

    def extend(self, tokens, positions, slots, mask, cache, split=None):
        """Final-norm hidden states of new tokens [B, T] with a KV cache (as `prefill`): their
        keys and values are written at `slots` [B, T]; `mask` [B, T, S] says which cache slots
        each token sees. Returns (hidden [B, T, embed], updated cache)."""
        inv_freq = self._inv_freq()

        def run_layer(block, x, cache):
            return block.extend(x, positions, slots, mask, inv_freq, cache)

        return self._cached(run_layer, tokens, cache, split)

    def _cached(self, run_layer, tokens, cache, split=None):
        """The layers with the KV cache: each layer writes its own entries."""
        if split is not None:  # a (keys, values) of its own per layer, run in line

            def run_own_cache(block, x, carried):
                caches, layer = carried
                x, (keys, values, _) = run_layer(block, x, (*caches[layer], 0))
                caches = (*caches[:layer], (keys, values), *caches[layer + 1 :])
                return x, (caches, layer + 1)

            x, (caches, _) = self._run_layers(run_own_cache, tokens, (cache, 0), split=split)
            return x, caches

        # The whole cache rides in the scan's carry, so each layer updates its new entries in
        # place; as scanned inputs and outputs, every step would copy the whole cache.
        def run_and_count(block, x, cache):
            x, (keys, values, layer) = run_layer(block, x, cache)
            return x, (keys, values, layer + 1)

        x, (keys, values, _) = self._run_layers(run_and_count, tokens, (*cache, jnp.int32(0)))
        return x, (keys, values)

    def _run_layers(self, run_layer, tokens, carried, remat: str = "none", split=None):
        """(final-norm hidden states, `carried`) after every layer over the embedded `tokens`,
        in one `lax.scan`: `run_layer(block, x, carried) -> (x, carried)`; `remat` names the
        policy (REMAT) for the layers' activations in a backward pass. With `split` (one
        state per layer, `split_layers`) the layers run in line over those states instead."""
        graphdef, layer_state = nnx.split(self.layers)

        def step(carry, state):
            return run_layer(nnx.merge(graphdef, state), *carry), None

        if remat != "none":
            step = jax.checkpoint(step, policy=REMAT[remat])
        carry = (constrain(self.embed(tokens), ACTIVATION_AXES), carried)
        if split is not None:
            for state in split:
                carry = step(carry, state)[0]
        else:
            unroll = 1 if self.config.scan_layers else self.config.num_layers
            carry, _ = jax.lax.scan(step, carry, layer_state, unroll=unroll)
        x, carried = carry
        return self.final_norm(x), carried

    def _inv_freq(self):
        cfg = self.config
        return inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)

    def output_table(self, ids=None):
        """The output projection as a [columns, embed] table in the parameter dtype: every
        row of the padded vocabulary, or the rows `ids` [K] (the tied embedding, or the LM
        head's kernel transposed, which XLA folds into the products that read it)."""
        table = self.embed.embedding[...] if self.lm_head is None else self.lm_head.kernel[...].T
        return table if ids is None else jnp.take(table, ids, axis=0)

    def real_columns(self):
        """[padded vocab] bool: the real vocabulary's columns (the padding ones are -inf)."""
        return jnp.arange(self.config.padded_vocab_size) < self.config.vocab_size

    def project(self, hidden):
        """Float32 logits over the padded vocabulary; padding entries are -inf."""
        logits = logits_against(hidden, self.output_table().astype(self.config.dtype))
        return jnp.where(self.real_columns(), logits, -jnp.inf)

    def project_rows(self, hidden, ids):
        """Float32 logits of the vocabulary entries `ids` [K] only: [..., K]."""
        return logits_against(hidden, self.output_table(ids).astype(self.config.dtype))

    def __call__(self, tokens, positions, segment_ids):
        return self.project(self.hidden_states(tokens, positions, segment_ids))


def param_axes(model: Decoder) -> dict:
    """Logical axes of every parameter, as a pure dict shaped like the parameter state."""
    axes = {}
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = tuple(variable.get_metadata()["axes"])
        axes[path] = ("layers", *names) if path[0] == "layers" else names
    return _unflatten(axes)


def _unflatten(flat: dict[tuple, object]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def abstract_decoder(cfg: ModelConfig) -> Decoder:
    """A Decoder whose parameters are shape/dtype placeholders (no memory, no compute)."""
    return nnx.eval_shape(lambda: Decoder(cfg, nnx.Rngs(0)))


def split_layers(params) -> list:
    """The stacked layer parameters of a Decoder's state as one state per layer (new arrays,
    cut once), for `prefill` / `extend` with `split`."""
    stacked = params["layers"]
    count = jax.tree.leaves(stacked)[0].shape[0]
    return [jax.tree.map(lambda leaf, i=i: leaf[i], stacked) for i in range(count)]
