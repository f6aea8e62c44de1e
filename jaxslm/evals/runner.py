"""Score whole benchmarks with one model: every task's sequences in one scorer call each, with a
progress bar over pairs, and a JSON-ready result per task."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from jaxslm.evals.restriction import check_sequences
from jaxslm.evals.scorer import Scorer
from jaxslm.evals.tasks import (
    CROSS_MODAL_SETTINGS,
    PairedSequences,
    SequenceBuilder,
    build_pairs,
    pairwise_accuracy,
    summarize,
    task_spec,
)

if TYPE_CHECKING:
    from jaxslm.evals.audio_units import AudioUnits


@dataclass(frozen=True)
class TaskRequest:
    """One task to run: its name, its data (JSONL file or folder) and task options."""

    name: str
    data: Path
    units_file: Path | None = None
    salmon_parts: tuple[str, ...] | None = None
    settings: tuple[str, ...] = CROSS_MODAL_SETTINGS


@dataclass
class TaskResult:
    """A task's summary (accuracy, pairs, parts) and per-pair log-likelihoods."""

    summary: dict
    pairs: list[dict] = field(default_factory=list)


def find_task_data(directory: Path, name: str) -> Path | None:
    """`directory/<name>.jsonl` or `directory/<name>/`, whichever exists (None if neither)."""
    for candidate in (directory / f"{name}.jsonl", directory / name):
        if candidate.exists():
            return candidate
    return None


def run_task(
    scorer: Scorer,
    builder: SequenceBuilder,
    request: TaskRequest,
    normalize: str = "mean",
    modality: str | None = None,
    progress: bool = True,
    audio: AudioUnits | None = None,
) -> TaskResult:
    """Build, check, score and summarise one task (audio of folders tokenized by `audio`)."""
    paired = prepare_task(scorer, builder, request, modality, audio)
    return score_task(scorer, request, paired, normalize, modality, progress)


def prepare_task(
    scorer: Scorer,
    builder: SequenceBuilder,
    request: TaskRequest,
    modality: str | None = None,
    audio: AudioUnits | None = None,
) -> PairedSequences:
    """A task's pairs as sequences, refused if `modality` leaves one without a finite score."""
    paired = build_pairs(
        task_spec(request.name),
        request.data,
        builder,
        request.units_file,
        request.salmon_parts,
        request.settings,
        audio,
    )
    allowed, masked = scorer.restriction(modality)
    check_sequences(request.name, paired, allowed, masked, builder.vocab, modality)
    return paired


def score_task(
    scorer: Scorer,
    request: TaskRequest,
    paired: PairedSequences,
    normalize: str = "mean",
    modality: str | None = None,
    progress: bool = True,
) -> TaskResult:
    """Score a prepared task: its summary (with `non_finite_pairs` when the model gave a pair
    a NaN or infinite log-likelihood) and per-pair log-likelihoods."""
    bar = tqdm(
        total=len(paired.names), unit="pair", desc=request.name, disable=not progress, leave=False
    )
    done = [0]

    def advance(sequences: int) -> None:
        done[0] += sequences
        bar.update(done[0] // 2 - bar.n)

    with bar:
        scores = scorer.log_likelihood(paired.sequences, normalize, modality, on_batch=advance)
    summary = {
        **summarize(pairwise_accuracy(scores), paired.parts),
        "data": str(request.data),
        "normalize": normalize,
        "modality": modality,
        "description": task_spec(request.name).description,
    }
    non_finite = int(np.count_nonzero(~np.isfinite(scores.reshape(-1, 2)).all(axis=1)))
    if non_finite:
        summary["non_finite_pairs"] = non_finite
    pairs = [
        {
            "positive": pos,
            "negative": neg,
            "part": part,
            "ll_positive": float(a),
            "ll_negative": float(b),
        }
        for (pos, neg), part, a, b in zip(
            paired.names, paired.parts, scores[0::2], scores[1::2], strict=True
        )
    ]
    return TaskResult(summary, pairs)


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table: one row per task and one per part."""
    rows = [("task", "part", "accuracy", "pairs")]
    for name, summary in results.items():
        rows.append((name, "", f"{100 * summary['accuracy']:.2f}", str(summary["pairs"])))
        for part, values in summary.get("parts", {}).items():
            rows.append(("", part, f"{100 * values['accuracy']:.2f}", str(values["pairs"])))
        if "macro_accuracy" in summary:
            rows.append(("", "(macro mean)", f"{100 * summary['macro_accuracy']:.2f}", ""))
        if "pair_accuracy" in summary:
            accuracy, count = summary["pair_accuracy"], str(summary["voice_pairs"])
            rows.append(("", "(minimal pairs)", f"{100 * accuracy:.2f}", count))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )
