"""AdamW with warmup + decay to a minimum learning rate, global-norm clipping, and weight decay
on matrices only (kernels and embeddings; never norms or biases)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

DECAYED_LEAVES = ("kernel", "embedding")


def learning_rate_schedule(
    peak: float, minimum: float, total_steps: int, warmup: int, decay: str
) -> optax.Schedule:
    """Linear warmup from 0 to `peak`, then `decay` (cosine | linear | constant) to `minimum`
    at `total_steps`."""
    decay_steps = max(total_steps - warmup, 1)
    if decay == "cosine":
        tail = optax.cosine_decay_schedule(peak, decay_steps, alpha=minimum / peak)
    elif decay == "linear":
        tail = optax.linear_schedule(peak, minimum, decay_steps)
    else:
        tail = optax.constant_schedule(peak)
    if warmup == 0:
        return tail
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), tail], [warmup])


def decay_mask(params) -> dict:
    """True for parameters that get weight decay: kernels and embedding tables."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) in DECAYED_LEAVES, params
    )


def make_optimizer(
    schedule: optax.Schedule,
    *,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    clip_norm: float,
) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW, in float32 whatever the parameter dtype (a bfloat16
    second moment could not decay: 0.999 x nu rounds back to nu)."""
    return in_float32(
        optax.chain(
            optax.clip_by_global_norm(clip_norm),
            optax.adamw(
                schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask
            ),
        )
    )


def in_float32(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner` on float32 copies of the gradients and parameters (so its state is float32),
    its updates cast back to each gradient's dtype; a no-op for float32 parameters."""

    def upcast(tree):
        return jax.tree.map(
            lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
        )

    def init(params):
        return inner.init(upcast(params))

    def update(updates, state, params=None):
        wide, state = inner.update(
            upcast(updates), state, None if params is None else upcast(params)
        )
        return jax.tree.map(lambda u, g: u.astype(g.dtype), wide, updates), state

    return optax.GradientTransformation(init, update)
