"""Cuervo & Marxer's scoring convention (`python -m jaxslm.evaluate --convention cuervo-marxer`),
the one behind the scores of their RESULTS.md (github tiagoCuervo/slm_scaling,
src/slm/evaluate.py; docs/reference.md section 5):

- A candidate's score is its mean unit NLL: the utterance after the start token (their EOS,
  jaxslm's `<S>`; the text BOS of interleaved models) with every unit a target and no terminal
  EOS (slamkit's default scores the final `<S>` too).
- A question is right when its positive has the strictly lower NLL. sBLIMP counts a tie as 0.5
  (ZeroSpeech's half credit); StoryCloze and sWUGGY count it as 0.
- sBLIMP: a question is one minimal pair said by one voice. Its scores are those of their
  evaluate.py's `summarize`: the macro accuracy (per phenomenon the mean over minimal pairs of
  their voices' mean decision, then the mean over phenomena; their `accuracy`), the
  voice-pair accuracy (the mean over every (minimal pair, voice) question; their
  `voice_pair_accuracy`) and the pair accuracy (the mean over minimal pairs of their voices'
  mean; their `pair_accuracy`). Their RESULTS.md describes the voice-pair accuracy as "both
  voices of a minimal pair correct"; their code, which made the table, does not, and is
  followed here.
- Voices and minimal pairs come from the benchmark's files: ZeroSpeech's `gold.csv` (columns
  `filename`, `id` = minimal pair, `voice`, `type` = phenomenon, `correct`), else slamkit's
  numbered layout, where each subfolder is a voice and the numbered pairs sharing an integer
  across subfolders are one minimal pair (phenomena from JSONL `phenomenon` fields).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from jaxslm.errors import JaxslmError
from jaxslm.evals.items import Item, load_items
from jaxslm.evals.pairing import numbered_pairs
from jaxslm.evals.tasks import SequenceBuilder, task_spec
from jaxslm.textfiles import read_utf8

if TYPE_CHECKING:
    from jaxslm.evals.audio_units import AudioUnits
    from jaxslm.evals.runner import TaskRequest, TaskResult
    from jaxslm.evals.scorer import Scorer

CONVENTIONS = ("slamkit", "cuervo-marxer")
HALF_CREDIT_TASKS = ("sblimp",)
TASKS = (
    "sblimp",
    "sstorycloze",
    "tstorycloze",
    "ms_sstorycloze",
    "ms_tstorycloze",
    "swuggy",
    "swuggy_oov",
)
GOLD_FILE = "gold.csv"
GOLD_COLUMNS = ("filename", "id", "voice", "type", "correct")


@dataclass(frozen=True)
class Question:
    """Two candidates, the positive first, with the minimal pair, voice and phenomenon."""

    positive: Item
    negative: Item
    phenomenon: str = ""
    pair: str = ""
    voice: str = ""


def check_convention(name: str, task: str) -> None:
    """Refuse a task the cuervo-marxer convention does not define."""
    if name not in CONVENTIONS:
        raise JaxslmError(f"convention {name!r} is not one of {CONVENTIONS}")
    if name == "cuervo-marxer" and task not in TASKS:
        raise JaxslmError(
            f"--task {task}: the cuervo-marxer convention scores spoken continuations of "
            f"{', '.join(TASKS)}; run {task} with the default convention"
        )


def read_gold(path: Path) -> dict[str, dict[str, str]]:
    """ZeroSpeech's gold.csv: filename (without extension) -> its row."""
    rows = list(csv.DictReader(read_utf8(path, "gold file").splitlines()))
    missing = [c for c in GOLD_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise JaxslmError(
            f"{path}: gold file needs the columns {', '.join(GOLD_COLUMNS)}; missing "
            f"{', '.join(missing)}"
        )
    gold = {}
    for number, row in enumerate(rows, start=2):
        if row["correct"].strip() not in ("0", "1"):
            raise JaxslmError(f"{path}:{number}: correct must be 1 or 0, got {row['correct']!r}")
        gold[Path(row["filename"].strip()).stem] = {k: row[k].strip() for k in GOLD_COLUMNS}
    return gold


def gold_questions(items: list[Item], gold: dict[str, dict[str, str]], source: Path):
    """One question per (minimal pair, voice) of gold.csv: its correct and incorrect items."""
    found = {item.base: item for item in items}
    absent = sorted(set(gold) - set(found))
    if absent:
        raise JaxslmError(
            f"{source}: {len(absent)} file(s) of the gold file have no item here (first: "
            f"{absent[0]}); the data and gold.csv do not belong together"
        )
    roles: dict[tuple[str, str], dict[str, Item]] = defaultdict(dict)
    for name, row in gold.items():
        role = "positive" if row["correct"] == "1" else "negative"
        if role in roles[row["id"], row["voice"]]:
            raise JaxslmError(
                f"{source}: minimal pair {row['id']} voice {row['voice']} has two "
                f"{role} files in the gold file"
            )
        roles[row["id"], row["voice"]][role] = found[name]
    questions = []
    for (pair, voice), members in sorted(roles.items()):
        if len(members) != 2:
            raise JaxslmError(
                f"{source}: minimal pair {pair} voice {voice} needs one correct and one "
                "incorrect file in the gold file"
            )
        phenomenon = gold[members["positive"].base]["type"]
        questions.append(
            Question(members["positive"], members["negative"], phenomenon, pair, voice)
        )
    return questions


def layout_questions(items: list[Item], separator: str, from_folder: bool) -> list[Question]:
    """slamkit's numbered pairs; a pair's voice is its subfolder and its minimal pair the
    integer its names start with."""
    return [
        Question(pos, neg, pos.phenomenon or "", pos.base.split(separator)[0], pos.group)
        for pos, neg in numbered_pairs(items, separator, from_folder)
    ]


def continuation(builder: SequenceBuilder, item: Item) -> list[int]:
    """The start token and the units, without the terminal `<S>` speech-only models add."""
    ids = builder.speech(item)
    return ids[:-1] if builder.vocab.mode == "speech-only" else ids


def decisions(nll: np.ndarray, half_ties: bool) -> np.ndarray:
    """Per question (candidates interleaved, positive first): 1 if the positive's NLL is lower,
    0.5 on a tie when `half_ties`, else 0."""
    positive, negative = nll[0::2], nll[1::2]
    tie = 0.5 if half_ties else 0.0
    return np.where(positive < negative, 1.0, np.where(positive == negative, tie, 0.0))


def sblimp_summary(values: np.ndarray, questions: Sequence[Question]) -> dict:
    """Question, macro, voice-pair and voice-mean pair accuracies (module docstring)."""
    voices: dict[tuple[str, str], list[float]] = defaultdict(list)
    for value, question in zip(values, questions, strict=True):
        voices[question.phenomenon, question.pair].append(float(value))
    by_phenomenon: dict[str, list[float]] = defaultdict(list)
    for (phenomenon, _), scores in voices.items():
        by_phenomenon[phenomenon].append(float(np.mean(scores)))
    parts = {
        phenomenon: {"accuracy": float(np.mean(means)), "pairs": len(means)}
        for phenomenon, means in sorted(by_phenomenon.items())
    }
    return {
        "accuracy": float(np.mean(values)),
        "pairs": len(questions),
        "macro_accuracy": float(np.mean([part["accuracy"] for part in parts.values()])),
        "voice_pair_accuracy": float(np.mean(values)),
        "pair_accuracy": float(np.mean([np.mean(s) for s in voices.values()])),
        "voice_pairs": len(voices),
        "parts": parts,
    }


def run_convention(
    scorer: Scorer,
    builder: SequenceBuilder,
    request: TaskRequest,
    gold: Path | None = None,
    progress: bool = True,
    audio: AudioUnits | None = None,
) -> TaskResult:
    """Score one task by Cuervo & Marxer's convention; sBLIMP's voices and minimal pairs come
    from `gold` (ZeroSpeech's gold.csv; default DATA/gold.csv when present), else the layout."""
    from jaxslm.evals.runner import TaskResult

    check_convention("cuervo-marxer", request.name)
    spec = task_spec(request.name)
    items = load_items(request.data, request.units_file, audio is not None)
    if request.name != "sblimp":
        gold = None
    elif gold is None and request.data.is_dir() and (request.data / GOLD_FILE).is_file():
        gold = request.data / GOLD_FILE
    if gold is not None:
        questions = gold_questions(items, read_gold(gold), request.data)
    else:
        questions = layout_questions(items, spec.separator, request.data.is_dir())
    if audio is not None:
        filled = audio.pairs([(q.positive, q.negative) for q in questions])
        questions = [
            replace(q, positive=p, negative=n) for q, (p, n) in zip(questions, filled, strict=True)
        ]
    sequences = [continuation(builder, i) for q in questions for i in (q.positive, q.negative)]
    with tqdm(total=len(sequences), unit="seq", desc=request.name, disable=not progress) as bar:
        nll = -scorer.log_likelihood(sequences, "mean", None, on_batch=bar.update)
    values = decisions(nll, half_ties=request.name in HALF_CREDIT_TASKS)
    if request.name == "sblimp":
        summary = sblimp_summary(values, questions)
    else:
        summary = {"accuracy": float(values.mean()), "pairs": len(questions)}
    summary |= {
        "data": str(request.data),
        "convention": "cuervo-marxer",
        "gold": None if gold is None else str(gold),
        "description": spec.description,
    }
    pairs = [
        {
            "positive": q.positive.name,
            "negative": q.negative.name,
            "part": q.phenomenon,
            "pair": q.pair,
            "voice": q.voice,
            "nll_positive": float(a),
            "nll_negative": float(b),
            "decision": float(value),
        }
        for q, a, b, value in zip(questions, nll[0::2], nll[1::2], values, strict=True)
    ]
    return TaskResult(summary, pairs)
