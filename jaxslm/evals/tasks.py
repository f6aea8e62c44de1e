"""The speech-LM benchmarks as slamkit defines them: which items pair up, how each becomes a
token sequence, and pairwise accuracy (1 if LL(positive) > LL(negative), 0.5 if equal)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.evals.items import Item, load_items
from jaxslm.evals.pairing import cross_modal_triples, numbered_pairs, salmon_pairs
from jaxslm.text_tokenizer import TextTokenizer
from jaxslm.vocab import SpeechVocab

if TYPE_CHECKING:
    from jaxslm.evals.audio_units import AudioUnits
    from jaxslm.speech.unit_pieces import UnitPieces

SALMON_PARTS = (
    "bg_alignment",
    "bg_all_consistency",
    "bg_domain_consistency",
    "gender_consistency",
    "rir_consistency",
    "sentiment_alignment",
    "sentiment_consistency",
    "speaker_consistency",
)
CROSS_MODAL_SETTINGS = ("S->S", "S->T", "T->S", "T->T")


@dataclass(frozen=True)
class TaskSpec:
    """A benchmark: how its items pair (`family`) and what each item is scored as (`reads`)."""

    family: str
    reads: str
    separator: str
    description: str


def _numbered(reads: str, description: str, separator: str = "_") -> TaskSpec:
    return TaskSpec("numbered", reads, separator, description)


TASKS: dict[str, TaskSpec] = {
    "swuggy": _numbered("units", "sWUGGY: spoken word vs non-word (in-vocabulary set)"),
    "swuggy_oov": _numbered("units", "sWUGGY, out-of-vocabulary set"),
    "sblimp": _numbered("units", "sBLIMP: grammatical vs ungrammatical sentence", "+"),
    "sstorycloze": _numbered("units", "spoken StoryCloze: right vs subtly wrong ending"),
    "tstorycloze": _numbered("units", "topic StoryCloze: right vs another story's ending"),
    "ms_sstorycloze": _numbered("units", "multi-speaker sStoryCloze (one subfolder per speaker)"),
    "ms_tstorycloze": _numbered("units", "multi-speaker tStoryCloze (one subfolder per speaker)"),
    "sstorycloze_text": _numbered("text", "StoryCloze as text (the sStoryCloze transcripts)"),
    "tstorycloze_text": _numbered("text", "topic StoryCloze as text"),
    "salmon": TaskSpec("salmon", "units", "_", "SALMon: acoustic consistency and alignment"),
    "cm_storycloze": TaskSpec(
        "cross_modal", "both", "_", "cross-modal StoryCloze: prompt and ending in S or T"
    ),
}


def task_spec(name: str) -> TaskSpec:
    """The spec of task `name`, or an error that lists the known tasks."""
    if name not in TASKS:
        raise JaxslmError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


class SequenceBuilder:
    """Token sequences of benchmark items, as the model saw such data in training.

    Speech: `<S> units <S>` for speech-only models, the text tokenizer's BOS (if it adds one)
    + units for interleaved ones (no marker). Text: BOS + text tokens. Cross-modal: BOS, then a
    modality marker before the prompt and at a switch of modality (slamkit's layout).
    `unit_pieces`: the items hold units and the model unigram speech tokens (encoded here).
    """

    def __init__(
        self,
        vocab: SpeechVocab,
        tokenizer: TextTokenizer | None,
        unit_pieces: UnitPieces | None = None,
    ):
        self.vocab, self.tokenizer, self.unit_pieces = vocab, tokenizer, unit_pieces
        bos = vocab.bos_id if tokenizer is None else tokenizer.bos_id
        self.bos = [] if bos is None else [bos]

    def speech(self, item: Item) -> list[int]:
        """An utterance's sequence."""
        ids = self._unit_ids(item)
        if self.vocab.mode == "speech-only":
            return [*self.bos, *ids, *self.bos]
        return [*self.bos, *ids]

    def text(self, item: Item) -> list[int]:
        """A text's sequence."""
        return [*self.bos, *self._text_ids(item, item.text)]

    def cross_modal(
        self, prompt: Item, ending: Item, setting: str, joined: np.ndarray | None = None
    ) -> list[int]:
        """`<mod>prompt<mod>ending` for setting "S->T" etc.; S->S takes the units of the joined
        audio (`joined`) or joins the two unit runs (one repeated unit at the seam merged), T->T
        joins the two texts as slamkit does."""
        if self.vocab.mode != "interleaved":
            raise JaxslmError(
                f"cross-modal StoryCloze needs an interleaved model, not a {self.vocab.mode} one"
            )
        source, target = setting.split("->")
        marker = {"S": self.vocab.speech_marker_id, "T": self.vocab.text_marker_id}
        if source == target == "S" and joined is not None:
            return [*self.bos, marker["S"], *self._unit_ids(replace(ending, units=joined))]
        if source == target == "S":
            first, second = self._unit_ids(prompt), self._unit_ids(ending)
            seam = 1 if first and second and first[-1] == second[0] else 0
            return [*self.bos, marker["S"], *first, *second[seam:]]
        if source == target == "T":
            text = self._need_text(prompt) + self._need_text(ending)
            joined = Item(ending.name, ending.origin, text=text)
            return [*self.bos, marker["T"], *self._text_ids(joined, joined.text)]
        pieces = [(source, prompt), (target, ending)]
        ids = list(self.bos)
        for modality, item in pieces:
            body = self._unit_ids(item) if modality == "S" else self._text_ids(item, item.text)
            ids += [marker[modality], *body]
        return ids

    def _unit_ids(self, item: Item) -> list[int]:
        if item.units is None:
            raise JaxslmError(f"{item.origin}: {item.name} has no speech units to score")
        if item.units.size == 0:
            raise JaxslmError(f"{item.origin}: {item.name} has no units (empty utterance)")
        if self.unit_pieces is not None:
            item = replace(item, units=self.unit_pieces.encode(item.units))
        if item.units.max() >= self.vocab.num_units:
            raise JaxslmError(
                f"{item.origin}: {item.name} holds unit {item.units.max()}, outside the model's "
                f"[0, {self.vocab.num_units}); was it tokenized with another codebook?"
            )
        return self.vocab.units_to_ids(item.units).tolist()

    def _text_ids(self, item: Item, text: str | None) -> list[int]:
        text = self._need_text(item) if text is None else text
        if self.tokenizer is None or self.vocab.mode == "speech-only":
            raise JaxslmError(
                f"{item.origin}: text input, but this {self.vocab.mode} model has no text "
                "vocabulary"
            )
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise JaxslmError(f"{item.origin}: {item.name} has empty text")
        return ids

    @staticmethod
    def _need_text(item: Item) -> str:
        if item.text is None:
            raise JaxslmError(f"{item.origin}: {item.name} has no text to score")
        return item.text


@dataclass
class PairedSequences:
    """Sequences to score, two per pair (positive, negative), with each pair's part."""

    sequences: list[list[int]]
    parts: list[str]
    names: list[tuple[str, str]]


def build_pairs(
    spec: TaskSpec,
    data: Path,
    builder: SequenceBuilder,
    units_file: Path | None = None,
    salmon_parts: tuple[str, ...] | None = None,
    settings: tuple[str, ...] = CROSS_MODAL_SETTINGS,
    audio: AudioUnits | None = None,
) -> PairedSequences:
    """Every pair of a task's data as token sequences; parts are phenomena, subfolders,
    SALMon parts or cross-modal settings ("" when the task has one part). Audio files of
    folders are tokenized by `audio`."""
    paired = PairedSequences([], [], [])
    keep_audio = audio is not None
    if spec.family == "salmon":
        for part in _salmon_parts(data, salmon_parts):
            pairs = salmon_pairs(load_items(data / part, units_file, keep_audio))
            pairs = audio.pairs(pairs) if audio is not None else pairs
            _add_pairs(paired, pairs, builder.speech, lambda pair, p=part: p)
    elif spec.family == "cross_modal":
        items = load_items(data, units_file, keep_audio)
        _add_cross_modal(paired, cross_modal_triples(items), builder, settings, audio)
    else:
        items = load_items(data, units_file, keep_audio)
        pairs = numbered_pairs(items, spec.separator, from_folder=data.is_dir())
        if spec.reads == "units" and audio is not None:
            pairs = audio.pairs(pairs)
        encode = builder.speech if spec.reads == "units" else builder.text
        _add_pairs(paired, pairs, encode, _pair_part)
    return paired


def _add_cross_modal(
    paired: PairedSequences,
    triples: list[tuple[Item, Item, Item]],
    builder: SequenceBuilder,
    settings: tuple[str, ...],
    audio: AudioUnits | None,
) -> None:
    """The pairs of each setting; from audio, S->S scores the units of the prompt's and the
    ending's audio joined into one file, as slamkit does (HuBERT sees across the seam)."""
    for setting in settings:
        if setting not in CROSS_MODAL_SETTINGS:
            raise JaxslmError(
                f"cross-modal setting {setting!r} is not one of {CROSS_MODAL_SETTINGS}"
            )
    joined: dict[str, np.ndarray] = {}
    if audio is not None and any("S" in setting for setting in settings):
        flat = audio.items([item for triple in triples for item in triple])
        triples = [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
        if "S->S" in settings:
            ends = [(p, e) for p, *endings in triples for e in endings if p.audio and e.audio]
            units = audio.joined([prompt for prompt, _ in ends], [end for _, end in ends])
            joined = {end.name: ids for (_, end), ids in zip(ends, units, strict=True)}
    for setting in settings:
        for prompt, correct, incorrect in triples:
            s_to_s = setting == "S->S"
            paired.sequences += [
                builder.cross_modal(prompt, end, setting, joined.get(end.name) if s_to_s else None)
                for end in (correct, incorrect)
            ]
            paired.parts.append(setting)
            paired.names.append((correct.name, incorrect.name))


def _add_pairs(paired: PairedSequences, pairs, encode: Callable, part_of: Callable) -> None:
    for positive, negative in pairs:
        paired.sequences += [encode(positive), encode(negative)]
        paired.parts.append(part_of((positive, negative)))
        paired.names.append((positive.name, negative.name))


def _pair_part(pair: tuple[Item, Item]) -> str:
    positive = pair[0]
    return positive.phenomenon or positive.group


def _salmon_parts(data: Path, parts: tuple[str, ...] | None) -> tuple[str, ...]:
    if not data.is_dir():
        raise JaxslmError(
            f"{data}: SALMon reads a folder, <root>/<part>/*_<index>_*.wav, with a subfolder "
            f"per part ({', '.join(SALMON_PARTS)}); pass its root folder"
        )
    present = tuple(p for p in SALMON_PARTS if (data / p).is_dir())
    wanted = parts or present
    missing = [p for p in wanted if p not in present]
    if missing:
        raise JaxslmError(
            f"{data}: SALMon part folder(s) {', '.join(missing)} missing; found "
            f"{', '.join(present) or 'none'}"
        )
    if not wanted:
        raise JaxslmError(
            f"{data}: no SALMon part folder here; expected subfolders named after the parts "
            f"({', '.join(SALMON_PARTS)})"
        )
    return wanted


def pairwise_accuracy(log_likelihoods: np.ndarray) -> np.ndarray:
    """Per pair: 1 if LL(positive) > LL(negative), 0.5 if equal, else 0 (pairs interleaved)."""
    positive, negative = log_likelihoods[0::2], log_likelihoods[1::2]
    return np.where(positive > negative, 1.0, np.where(positive == negative, 0.5, 0.0))


def summarize(correct: np.ndarray, parts: list[str]) -> dict:
    """Accuracy and pair count overall and per part; with several parts also their macro mean."""
    result: dict = {"accuracy": float(correct.mean()), "pairs": int(correct.size)}
    by_part: dict[str, list[float]] = defaultdict(list)
    for value, part in zip(correct, parts, strict=True):
        by_part[part].append(float(value))
    if len(by_part) > 1:
        result["parts"] = {
            part: {"accuracy": float(np.mean(values)), "pairs": len(values)}
            for part, values in sorted(by_part.items())
        }
        result["macro_accuracy"] = float(np.mean([p["accuracy"] for p in result["parts"].values()]))
    return result
