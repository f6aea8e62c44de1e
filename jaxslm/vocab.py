"""Speech vocabularies: where unit and modality ids live, and which ids a modality keeps.

Layouts follow slamkit so checkpoints interoperate (docs/reference.md section 2):
- `interleaved`: text tokenizer ids, then `<Un0>`..`<Un{K-1}>`, `<speech>`, `<text>`.
- `speech-only`: `<PAD>` = 0, `<S>` = 1 (BOS and EOS), `<Un{i}>` = i + 2; or, with
  `units_first` (Cuervo & Marxer's layout, docs/reference.md section 2), `<Un{i}>` = i,
  `<S>` = K (their EOS, which also starts each sequence) and `<PAD>` = K + 1 when present.
- `text`: the text model's vocabulary unchanged (no speech units).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxslm.errors import JaxslmError

MODES = ("interleaved", "speech-only", "text")
TEXT, SPEECH, MARKER = 0, 1, 2
SPEECH_MARKER, TEXT_MARKER = "<speech>", "<text>"
MODALITIES = ("speech", "text")
SPEECH_ONLY_PAD, SPEECH_ONLY_BOUNDARY = "<PAD>", "<S>"
SPEECH_LAYOUTS = ("slamkit", "cuervo-marxer")  # speech-only id layouts: PAD/S/units, units/S/PAD


def unit_token(index: int) -> str:
    """The token string of unit `index`."""
    return f"<Un{index}>"


@dataclass(frozen=True)
class SpeechVocab:
    """Token-id layout of a speech LM.

    `text_size` is len(text tokenizer) for `interleaved` and the text model's vocabulary for
    `text`; it is 0 for `speech-only`. `eos_ids` may hold several ids (Llama 3 instruct).
    `units_first` (speech-only): units take ids 0..K-1, then `<S>` and an optional `<PAD>`.
    """

    mode: str
    text_size: int
    num_units: int
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    pad_id: int | None = None
    units_first: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise JaxslmError(f"vocabulary mode {self.mode!r} is not one of {MODES}")
        if self.num_units < 0 or (self.mode != "text" and self.num_units == 0):
            raise JaxslmError(f"{self.mode} vocabulary needs num_units > 0, got {self.num_units}")
        if self.mode == "text" and self.num_units:
            raise JaxslmError("a text vocabulary has no speech units: use mode 'interleaved'")
        if self.units_first and self.mode != "speech-only":
            raise JaxslmError(
                f"units_first is a speech-only layout; this vocabulary is {self.mode}"
            )

    @classmethod
    def speech_only(cls, num_units: int, layout: str = "slamkit", pad: bool = True) -> SpeechVocab:
        """A speech-only vocabulary: `layout` "slamkit" (TWIST/Slam: `<PAD>`, `<S>`, units) or
        "cuervo-marxer" (units, `<S>` = K, and `<PAD>` = K + 1 unless `pad` is False)."""
        if layout not in SPEECH_LAYOUTS:
            raise JaxslmError(f"speech-only layout {layout!r} is not one of {SPEECH_LAYOUTS}")
        if layout == "slamkit":
            return cls("speech-only", 0, num_units, bos_id=1, eos_ids=(1,), pad_id=0)
        pad_id = num_units + 1 if pad else None
        boundary = num_units
        return cls("speech-only", 0, num_units, boundary, (boundary,), pad_id, units_first=True)

    @property
    def unit_offset(self) -> int:
        """Id of `<Un0>`."""
        if self.mode == "speech-only":
            return 0 if self.units_first else 2
        return self.text_size

    @property
    def size(self) -> int:
        """Real vocabulary size V."""
        if self.mode == "speech-only":
            return self.num_units + (1 + (self.pad_id is not None) if self.units_first else 2)
        if self.mode == "text":
            return self.text_size
        return self.text_size + self.num_units + 2

    @property
    def speech_marker_id(self) -> int:
        """Id of `<speech>` (interleaved only)."""
        self._require_interleaved("<speech>")
        return self.text_size + self.num_units

    @property
    def text_marker_id(self) -> int:
        """Id of `<text>` (interleaved only)."""
        self._require_interleaved("<text>")
        return self.text_size + self.num_units + 1

    def _require_interleaved(self, what: str) -> None:
        if self.mode != "interleaved":
            raise JaxslmError(f"{what} exists only in interleaved vocabularies, not {self.mode!r}")

    def unit_id(self, unit: int) -> int:
        """Token id of unit `unit`."""
        if not 0 <= unit < self.num_units:
            raise JaxslmError(f"unit {unit} is outside [0, {self.num_units})")
        return self.unit_offset + unit

    def units_to_ids(self, units) -> np.ndarray:
        """Token ids of an array of units."""
        units = np.asarray(units, dtype=np.int64)
        if units.size and (units.min() < 0 or units.max() >= self.num_units):
            raise JaxslmError(
                f"units must lie in [0, {self.num_units}); got {units.min()}..{units.max()}"
            )
        return (units + self.unit_offset).astype(np.int32)

    def added_tokens(self) -> list[str]:
        """Tokens added on top of the text tokenizer, in id order from `unit_offset`."""
        if self.mode == "text":
            return []
        units = [unit_token(i) for i in range(self.num_units)]
        if self.units_first:
            return [*units, SPEECH_ONLY_BOUNDARY, *([SPEECH_ONLY_PAD] * (self.pad_id is not None))]
        if self.mode == "speech-only":
            return [SPEECH_ONLY_PAD, SPEECH_ONLY_BOUNDARY, *units]
        return [*units, SPEECH_MARKER, TEXT_MARKER]

    def modality(self, ids) -> np.ndarray:
        """Per-token modality: 0 text, 1 speech unit, 2 marker (or `<PAD>`/`<S>`)."""
        ids = np.asarray(ids)
        is_unit = (ids >= self.unit_offset) & (ids < self.unit_offset + self.num_units)
        if self.mode == "speech-only":
            return np.where(is_unit, SPEECH, MARKER).astype(np.int8)
        marker = ids >= self.unit_offset + self.num_units if self.mode == "interleaved" else False
        return np.where(is_unit, SPEECH, np.where(marker, MARKER, TEXT)).astype(np.int8)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `from_dict` reverses it."""
        fields = dataclasses.asdict(self)
        fields["eos_ids"] = list(self.eos_ids)
        return fields

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> SpeechVocab:
        """Inverse of `to_dict`."""
        return cls(**{**fields, "eos_ids": tuple(fields.get("eos_ids", ()))})


def allowed_tokens(vocab: SpeechVocab, modality: str | None, padded_size: int) -> np.ndarray:
    """Boolean [padded_size]: the ids whose logits stay when scoring restricted to `modality`.

    As slamkit's `used_token_modality`: "speech" bans text tokens and both markers (BOS/EOS
    stay); "text" bans the units. A speech-only vocabulary holds nothing to ban for speech.
    """
    allowed = np.zeros(padded_size, bool)
    allowed[: vocab.size] = True
    if modality is None:
        return allowed
    if modality not in MODALITIES:
        raise JaxslmError(f"modality {modality!r} is not one of {MODALITIES} (or None)")
    missing = {"speech": vocab.mode == "text", "text": vocab.mode == "speech-only"}[modality]
    if missing:
        raise JaxslmError(f"a {vocab.mode} vocabulary has no {modality} tokens to score")
    units = slice(vocab.unit_offset, vocab.unit_offset + vocab.num_units)
    if modality == "text":
        allowed[units] = False
    elif vocab.mode == "interleaved":
        allowed[: vocab.size] = False
        allowed[units] = True
        specials = [i for i in (vocab.bos_id, *vocab.eos_ids) if i is not None]
        allowed[specials] = True
    return allowed


def slamkit_allowed_tokens(
    vocab: SpeechVocab,
    modality: str | None,
    padded_size: int,
    bos_id: int | None,
    eos_id: int | None,
    marker_first_ids: Sequence[int],
) -> np.ndarray:
    """Boolean [padded_size]: the ids slamkit's restriction keeps (`get_ignore_tokens` of
    slamkit/tokeniser/interleaving_tokeniser.py), given the tokenizer's BOS and EOS and the first
    id `encode` gives for each marker, which slamkit takes as the marker's id.

    Interleaved "speech" bans every text id but BOS/EOS, then those first ids; "text" bans every
    added id (units, markers) but BOS/EOS and those first ids. Where the tokenizer prepends BOS
    (Llama) the first id is BOS: speech then bans BOS and keeps both markers, and text bans the
    markers. Where it does not (Qwen2.5) this is `allowed_tokens`. Other layouts: slamkit's unit
    tokeniser bans nothing, as `allowed_tokens` does for speech.
    """
    if modality is None or vocab.mode != "interleaved":
        return allowed_tokens(vocab, modality, padded_size)
    if modality not in MODALITIES:
        raise JaxslmError(f"modality {modality!r} is not one of {MODALITIES} (or None)")
    specials = [i for i in (bos_id, eos_id) if i is not None]
    allowed = np.zeros(padded_size, bool)
    allowed[: vocab.size] = True
    if modality == "speech":
        allowed[: vocab.text_size] = False
        allowed[specials] = True
        allowed[list(marker_first_ids)] = False
    else:
        allowed[vocab.text_size : vocab.size] = False
        allowed[[*specials, *marker_first_ids]] = True
    return allowed
