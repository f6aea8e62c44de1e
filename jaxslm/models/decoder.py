"""The Llama / Qwen2 decoder in Flax NNX, with stacked layers run by `jax.lax.scan`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from jaxslm.models.attention import causal_attention, dot_product_attention, segment_causal_mask
from jaxslm.models.config import ModelConfig
from jaxslm.models.layers import Dense, Embed, RMSNorm, logits_against
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
        self.q = _dense(cfg, rngs, (e,), (h, d), ("embed", "heads", "head_dim"), cfg.qkv_bias)
        self.k = _dense(cfg, rngs, (e,), (kv, d), ("embed", "kv_heads", "head_dim"), cfg.qkv_bias)
        self.v = _dense(cfg, rngs, (e,), (kv, d), ("embed", "kv_heads", "head_dim"), cfg.qkv_bias)
        self.o = _dense(cfg, rngs, (h, d), (e,), ("heads", "head_dim", "embed"), cfg.out_bias)

    def __call__(self, x, positions, mask, inv_freq, cache=None, slots=None):
        """Self-attention. With `cache` = (keys, values [layers, B, KV, S, D], this layer's
        index), the new keys and values are written at `slots` [B, T] of this layer (in place:
        only B x T entries change), and the queries attend over the layer's first S' cache
        slots, S' being the width of `mask` [B, T, S']."""
        query = checkpoint_name(apply_rope(self.q(x), positions, inv_freq), "query")
        key = checkpoint_name(apply_rope(self.k(x), positions, inv_freq), "key")
        value = checkpoint_name(self.v(x), "value")
        if cache is None:
            attended = checkpoint_name(causal_attention(query, key, value, mask), "attention")
            return checkpoint_name(self.o(attended), "attention_out")
        keys, values, layer = cache
        rows = jnp.arange(x.shape[0])[:, None]
        keys = keys.at[layer, rows, :, slots].set(key.astype(keys.dtype))
        values = values.at[layer, rows, :, slots].set(value.astype(values.dtype))
        window = mask.shape[-1]  # a narrower mask attends over the first slots only
        keys_seen, values_seen = keys[layer][:, :, :window], values[layer][:, :, :window]
        attended = dot_product_attention(query, keys_seen, values_seen, mask, "bksd")
        return self.o(attended), (keys, values, layer)


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

    def __call__(self, x, positions, mask, inv_freq):
        x = x + self.attn(self.attn_norm(x), positions, mask, inv_freq)
        x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, ACTIVATION_AXES)

    def cached(self, x, positions, mask, inv_freq, cache, slots):
        """The layer over new tokens with a KV cache (see `Attention`); returns (x, cache)."""
        attended, cache = self.attn(self.attn_norm(x), positions, mask, inv_freq, cache, slots)
        x = x + attended
        x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, ACTIVATION_AXES), cache


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
        cfg = self.config
        inv_freq = inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        mask = segment_causal_mask(segment_ids, branch_ids)
        graphdef, layer_state = nnx.split(self.layers)

        def run_layer(x, state):
            return nnx.merge(graphdef, state)(x, positions, mask, inv_freq), None

        if cfg.remat != "none":
            run_layer = jax.checkpoint(run_layer, policy=REMAT[cfg.remat])
        x = constrain(self.embed(tokens), ACTIVATION_AXES)
        unroll = 1 if cfg.scan_layers else cfg.num_layers
        x, _ = jax.lax.scan(run_layer, x, layer_state, unroll=unroll)
        return self.final_norm(x)

    def cached_hidden_states(self, tokens, positions, slots, mask, cache):
        """Final-norm hidden states of new tokens [B, T] with a KV cache.

        `cache` holds keys and values [layers, B, KV, S, D]; the tokens' keys and values are
        written at `slots` [B, T]; `mask` [B, T, S] says which cache slots each token sees.
        Returns (hidden [B, T, embed], updated cache).
        """
        cfg = self.config
        inv_freq = inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        graphdef, layer_state = nnx.split(self.layers)

        # The whole cache rides in the scan's carry, so each layer updates its new entries in
        # place; as scanned inputs and outputs, every step would copy the whole cache.
        def run_layer(carry, state):
            x, cache = carry
            x, cache = nnx.merge(graphdef, state).cached(x, positions, mask, inv_freq, cache, slots)
            keys, values, layer = cache
            return (x, (keys, values, layer + 1)), None

        x = constrain(self.embed(tokens), ACTIVATION_AXES)
        unroll = 1 if cfg.scan_layers else cfg.num_layers
        carry = (x, (*cache, jnp.int32(0)))
        (x, (keys, values, _)), _ = jax.lax.scan(run_layer, carry, layer_state, unroll=unroll)
        return self.final_norm(x), (keys, values)

    def project(self, hidden):
        """Float32 logits over the padded vocabulary; padding entries are -inf."""
        if self.lm_head is None:
            logits = self.embed.attend(hidden)
        else:
            logits = self.lm_head(hidden, preferred_element_type=jnp.float32)
        real = jnp.arange(self.config.padded_vocab_size) < self.config.vocab_size
        return jnp.where(real, logits, -jnp.inf)

    def project_rows(self, hidden, ids):
        """Float32 logits of the vocabulary entries `ids` [K] only: [..., K]."""
        if self.lm_head is None:
            table = jnp.take(self.embed.embedding[...], ids, axis=0).astype(self.embed.dtype)
        else:
            table = jnp.take(self.lm_head.kernel[...], ids, axis=1).T.astype(self.lm_head.dtype)
        return logits_against(hidden, table)

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
