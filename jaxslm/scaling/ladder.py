"""Cuervo & Marxer's ladder as a sweep family (`family: cuervo-marxer` in a sweep config): their
five model sizes with the batch arithmetic and scaling-curve budgets of github
tiagoCuervo/slm_scaling (README.md's table, configs/scaling/*.json and their README).

Each size trains sequences of 2,050 tokens, `sequences` of them per update in `micro_batches`
accumulated parts, with `warmup_steps` of warmup; their curve points are complete runs of
`curve` updates each. `a100_mfu` is their stable MFU on one A100-80GB PCIe (RESULTS.md:
median raw MFU after warmup, bf16 autocast, torch.compile, nanoGPT's 6 N + 12 L H Q T FLOPs
per token against 312 TFLOP/s).
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxslm.errors import JaxslmError
from jaxslm.models.model_config import SHAPE_FIELDS
from jaxslm.models.presets import LADDER_CONTEXT, get_preset

FAMILIES = ("rule", "cuervo-marxer")


@dataclass(frozen=True)
class Rung:
    """One size of the ladder (its preset has the same name)."""

    sequences: int
    micro_batches: int
    warmup_steps: int
    curve: tuple[int, ...]
    a100_mfu: float

    @property
    def tokens_per_update(self) -> int:
        return self.sequences * LADDER_CONTEXT


LADDER: dict[str, Rung] = {
    "20m": Rung(64, 1, 1000, (5050, 10100, 15750, 165950, 331900, 497900, 663850, 829800), 0.3197),
    "85m": Rung(128, 2, 1000, (5200, 10400, 20800, 32500, 165950, 248950, 331900, 414900), 0.3652),
    "155m": Rung(256, 4, 1000, (5850, 9400, 18850, 37000, 82950, 124450), 0.4195),
    "309m": Rung(252, 7, 588, (5850, 9550, 19100, 38250, 58850), 0.4360),
    # their paper curve (no published config: the warmup of 1,000 is our assumption)
    "823m": Rung(456, 19, 1000, (8850, 17650), 0.6252),
}


def check_sizes(sizes: tuple[str, ...]) -> tuple[str, ...]:
    """`sizes` (all five when empty), each a rung of the ladder."""
    unknown = [size for size in sizes if size not in LADDER]
    if unknown:
        raise JaxslmError(
            f"sweep: sizes {', '.join(map(str, unknown))} are not on the cuervo-marxer ladder "
            f"({', '.join(LADDER)})"
        )
    return sizes or tuple(LADDER)


def shape_keys(size: str) -> dict[str, object]:
    """The model keys of a rung: its preset and every shape key the preset fixes."""
    architecture = get_preset(size).architecture
    keys: dict[str, object] = {"preset": size}
    keys.update({name: architecture[name] for name in SHAPE_FIELDS})
    keys["tie_word_embeddings"] = str(architecture["tie_word_embeddings"]).lower()
    keys["max_position_embeddings"] = architecture["max_position_embeddings"]
    return {f"model.{name}": value for name, value in keys.items()}


def batch_keys(size: str) -> dict[str, object]:
    """Their batch arithmetic and warmup for a rung, as config keys."""
    rung = LADDER[size]
    return {
        "data.seq_len": LADDER_CONTEXT,
        "data.batch_size": rung.sequences,
        "data.micro_batches": rung.micro_batches,
        "schedule.warmup_steps": rung.warmup_steps,
        "schedule.warmup_fraction": 0.0,
    }
