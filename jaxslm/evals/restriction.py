"""`--modality` against a task's data, checked before scoring.

A restriction sets the other modality's logits to -inf and leaves the targets as they are
(slamkit's `used_token_modality`), so a sequence with a target the restriction bans scores -inf,
and a pair of two such sequences ties: a task of the other modality silently scores chance
(slamkit does so). jaxslm refuses instead: `check_tasks` by task before the model loads,
`check_sequences` by token once the sequences are built. A sequence with no scored target (all
of them the id `--compat slamkit` masks) has no mean log-likelihood and is refused as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.evals.tasks import PairedSequences, task_spec
from jaxslm.vocab import MARKER, SPEECH, TEXT, SpeechVocab

READS = {"units": "speech", "text": "text"}
SETTING_MODALITY = {"S": "speech", "T": "text"}
KIND_NAMES = {TEXT: "text tokens", SPEECH: "speech units"}


def task_modalities(name: str, settings: Sequence[str]) -> set[str]:
    """The modalities whose tokens task `name` scores (cross-modal: over its `settings`)."""
    spec = task_spec(name)
    if spec.family == "cross_modal":
        return {SETTING_MODALITY[side] for setting in settings for side in setting.split("->")}
    return {READS[spec.reads]}


def check_tasks(modality: str | None, names: Sequence[str], settings: Sequence[str]) -> None:
    """Refuse likelihood tasks in `names` that score tokens of the modality `modality` bans."""
    if modality is None:
        return
    other = "text" if modality == "speech" else "speech"
    misfits = [name for name in names if other in task_modalities(name, settings)]
    if not misfits:
        return
    fits = [name for name in names if name not in misfits]
    rest = " ".join(f"--task {name}" for name in fits)
    raise JaxslmError(
        f"--modality {modality} bans {other} tokens, which "
        f"{', '.join(_misfit(name, settings, other) for name in misfits)} score: their "
        f"log-likelihoods would be -inf and their accuracy chance. Run "
        f"{', '.join(misfits)} in a call without --modality"
        + (f", and the rest with --modality {modality} {rest}" if fits else "")
    )


def _misfit(name: str, settings: Sequence[str], other: str) -> str:
    """`name`, with the settings that score `other` for cross-modal StoryCloze."""
    if task_spec(name).family != "cross_modal":
        return name
    letter = other[0].upper()
    return f"{name} (settings {', '.join(s for s in settings if letter in s)})"


def check_sequences(
    name: str,
    paired: PairedSequences,
    allowed: np.ndarray,
    masked: int,
    vocab: SpeechVocab,
    modality: str | None,
) -> None:
    """Refuse task `name` when a sequence has a scored target outside `allowed` (it would
    score -inf) or no scored target at all (`masked`: the target id left out, -1 for none)."""
    targets = [np.asarray(sequence[1:], np.int64) for sequence in paired.sequences]
    owner = np.repeat(np.arange(len(targets)), [t.size for t in targets])
    ids = np.concatenate([np.zeros(0, np.int64), *targets])
    scored = ids != masked
    banned = scored & ~allowed[ids]
    per_sequence = np.bincount(owner[banned], minlength=len(targets)) > 0
    _refuse_banned(name, paired, per_sequence, ids[banned], vocab, modality)
    _refuse_empty(name, paired, np.bincount(owner[scored], minlength=len(targets)) == 0, masked)


def _refuse_banned(
    name: str,
    paired: PairedSequences,
    refused: np.ndarray,
    banned_ids: np.ndarray,
    vocab: SpeechVocab,
    modality: str | None,
) -> None:
    if not refused.any():
        return
    kinds = ", ".join(_token_kinds(np.unique(banned_ids), vocab))
    raise JaxslmError(
        f"--modality {modality}: {name} has {np.count_nonzero(refused)} of {refused.size} "
        f"sequences{_where(paired, refused)} whose targets hold {kinds}, which the restriction "
        f"bans: they would score -inf, which ties or decides their pairs whatever the "
        f"model; score {name} without --modality"
    )


def _refuse_empty(name: str, paired: PairedSequences, empty: np.ndarray, masked: int) -> None:
    if not empty.any():
        return
    masked_note = f" (or only id {masked}, which --compat slamkit does not score)"
    raise JaxslmError(
        f"{name} has {np.count_nonzero(empty)} sequences{_where(paired, empty)} with no target "
        f"to score{masked_note if masked >= 0 else ''}: they have no log-likelihood; drop those "
        "pairs from the data"
    )


def _token_kinds(ids: np.ndarray, vocab: SpeechVocab) -> list[str]:
    """Names of what `ids` are: text tokens, speech units, or each marker by its token."""
    kinds = vocab.modality(ids)
    names = [KIND_NAMES[kind] for kind in (TEXT, SPEECH) if (kinds == kind).any()]
    tokens = vocab.added_tokens()
    return names + [tokens[i - vocab.text_size] for i in ids[kinds == MARKER]]


def _where(paired: PairedSequences, refused: np.ndarray) -> str:
    """Where refused sequences are: the first one's pair, and their parts if the task has some."""
    pair = int(np.flatnonzero(refused)[0]) // 2
    where = f" (first: pair {' / '.join(paired.names[pair])}"
    parts = sorted({paired.parts[i // 2] for i in np.flatnonzero(refused)} - {""})
    return where + (f"; parts {', '.join(parts)})" if parts else ")")
