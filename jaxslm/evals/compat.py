"""slamkit's scoring rules where they differ from jaxslm's, to reproduce published numbers.

`--compat slamkit` (slamkit HEAD 388b402) changes three things:
- Targets equal to id 0 are not scored: `UnitLM.log_likelihood` (slamkit/model/unit_lm.py)
  masks targets equal to the base config's pad id, 0 by config/model/default.yaml. In
  Llama 3 and Qwen2.5 text, id 0 is "!".
- The modality restriction takes each marker's id as `encode(marker)[0]`
  (`get_ignore_tokens`, slamkit/tokeniser/interleaving_tokeniser.py): BOS where the tokenizer
  prepends one (`jaxslm.vocab.slamkit_allowed_tokens`).
- Benchmark audio is tokenized in zero-padded batches of pairs (`jaxslm.evals.audio_units`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxslm.errors import JaxslmError
from jaxslm.text_tokenizer import TextTokenizer
from jaxslm.vocab import SpeechVocab, slamkit_allowed_tokens

COMPAT_MODES = ("jaxslm", "slamkit")
SLAMKIT_PAD_ID = 0
SLAMKIT_BATCH_SIZE = 8  # pairs per batch: config/eval.yaml batch_size


def check_compat(compat: str) -> str:
    """`compat` if it names a mode, else an error listing them."""
    if compat not in COMPAT_MODES:
        raise JaxslmError(f"compat {compat!r} is not one of {COMPAT_MODES}")
    return compat


@dataclass(frozen=True)
class SlamkitRules:
    """What slamkit's scores depend on beyond the vocabulary layout: the tokenizer's BOS and
    EOS, the first id `encode` gives for `<speech>` and `<text>`, and the target id it masks."""

    bos_id: int | None = None
    eos_id: int | None = None
    marker_first_ids: tuple[int, ...] = ()
    masked_target: int = SLAMKIT_PAD_ID

    @classmethod
    def for_model(cls, vocab: SpeechVocab, tokenizer: TextTokenizer | None) -> SlamkitRules:
        """The rules for a model with `vocab` and its text tokenizer (None when speech-only)."""
        if vocab.mode != "interleaved":
            return cls(vocab.bos_id, vocab.eos_ids[0] if vocab.eos_ids else None)
        if tokenizer is None:
            raise JaxslmError(
                "slamkit-compatible scoring of an interleaved model needs its text tokenizer"
            )
        bos = tokenizer.bos_id
        markers = (vocab.speech_marker_id, vocab.text_marker_id)
        return cls(bos, tokenizer.eos_id, tuple(m if bos is None else bos for m in markers))

    def allowed(self, vocab: SpeechVocab, modality: str | None, padded_size: int) -> np.ndarray:
        """Boolean [padded_size]: the ids whose logits stay under slamkit's restriction."""
        return slamkit_allowed_tokens(
            vocab, modality, padded_size, self.bos_id, self.eos_id, self.marker_first_ids
        )
