"""Cross-entropy over `loss_mask`, and the per-modality sums behind the text / unit / marker
losses that training reports."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxslm.vocab import MARKER, SPEECH, TEXT

MODALITY_NAMES = {TEXT: "text", SPEECH: "speech", MARKER: "marker"}


def loss_sums(
    nll: jax.Array, batch: dict[str, jax.Array], total: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Summed NLL and target counts over `loss_mask`, overall and per target modality.

    Keys: `nll`, `count`, and `nll_<m>`, `count_<m>` for m in text, speech, marker. Sums (not
    means) so that micro-batches and devices add up exactly to the whole batch. `total`, when
    given, is the overall sum (the differentiable one of jaxslm.models.head.nll_sum).
    """
    mask = batch["loss_mask"].astype(jnp.float32)
    weighted = jnp.where(mask > 0, nll, 0.0) * mask
    sums = {"nll": weighted.sum() if total is None else total, "count": mask.sum()}
    for code, name in MODALITY_NAMES.items():
        selected = batch["modality"] == code
        sums[f"nll_{name}"] = jnp.where(selected, weighted, 0.0).sum()
        sums[f"count_{name}"] = jnp.where(selected, mask, 0.0).sum()
    return sums


def mean_losses(sums: dict) -> dict[str, float]:
    """`loss` and `loss_<modality>` means from `loss_sums` output (NaN where nothing counted)."""
    means = {"loss": _ratio(sums["nll"], sums["count"])}
    for name in MODALITY_NAMES.values():
        means[f"loss_{name}"] = _ratio(sums[f"nll_{name}"], sums[f"count_{name}"])
    return means


def _ratio(total, count) -> float:
    count = float(count)
    return float(total) / count if count else float("nan")
