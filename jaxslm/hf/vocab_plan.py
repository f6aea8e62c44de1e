"""Which speech vocabulary an imported model gets, and the tokenizer files that go with it.

Decided from the source (a HF text LM, a slamkit checkpoint, or a jaxslm export), the text
tokenizer and the user's --speech-units / --mode, with every disagreement a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxslm.errors import JaxslmError
from jaxslm.hf.config_map import SPEECH_VOCAB_KEY
from jaxslm.text_tokenizer import TOKENIZER_FILE, HFTokenizer, speech_only_tokenizer
from jaxslm.vocab import SpeechVocab, unit_token

DEFAULT_UNITS = 500


@dataclass(frozen=True)
class VocabSource:
    """What the importer knows about the source model's vocabulary."""

    config: dict[str, Any]  # the text LM's HF config (for slamkit: its base_config)
    rows: int  # embedding rows in the weights
    directory: Path
    is_slamkit: bool
    tokenizer: HFTokenizer | None
    tokenizer_dir: Path


def find_tokenizer(hf_dir: Path, tokenizer_dir: str | Path | None) -> HFTokenizer | None:
    """The text tokenizer from --tokenizer, else from the model directory, else None."""
    if tokenizer_dir is not None:
        return HFTokenizer.from_dir(tokenizer_dir)
    if (hf_dir / TOKENIZER_FILE).is_file():
        return HFTokenizer.from_dir(hf_dir)
    return None


def plan_vocab(source: VocabSource, units: int | None, mode: str | None) -> SpeechVocab:
    """The SpeechVocab of the imported model.

    `units=None` means 500 for text LMs and "infer from the weights" for slamkit checkpoints
    (speech-only without a tokenizer, interleaved with one).
    """
    if SPEECH_VOCAB_KEY in source.config:
        return _exported_vocab(source, SpeechVocab.from_dict(source.config[SPEECH_VOCAB_KEY]))
    if units is not None and units < 0:
        raise JaxslmError(f"--speech-units {units}: must be >= 0 (0 keeps the text vocabulary)")
    if units == 0 and mode == "speech-only":
        raise JaxslmError(
            "--speech-units 0 keeps the text vocabulary, which --mode speech-only contradicts: "
            "give the number of units (e.g. --speech-units 500), or drop --mode"
        )
    if units == 0:
        return _with_special_ids(SpeechVocab("text", source.rows, 0), source)
    if source.is_slamkit:
        return _slamkit_vocab(source, units, mode)
    units = DEFAULT_UNITS if units is None else units
    if mode == "speech-only":
        if source.rows < units + 2:
            raise JaxslmError(
                f"{source.directory}: speech-only needs {units + 2} embedding rows, "
                f"the model has {source.rows}"
            )
        return SpeechVocab.speech_only(units)
    tokenizer = _require_tokenizer(source)
    if len(tokenizer) > source.rows:
        raise JaxslmError(
            f"{source.tokenizer_dir}: tokenizer has {len(tokenizer)} entries but the weights in "
            f"{source.directory} have only {source.rows} embedding rows; pass the tokenizer "
            "that belongs to this model"
        )
    return _with_special_ids(SpeechVocab("interleaved", len(tokenizer), units), source)


def _slamkit_vocab(source: VocabSource, units: int | None, mode: str | None) -> SpeechVocab:
    """slamkit stores the extended vocabulary but no tokenizer: check the sizes add up."""
    if mode is None:
        mode = "interleaved" if source.tokenizer is not None else "speech-only"
    if mode == "speech-only":
        units = source.rows - 2 if units is None else units
        if source.rows != units + 2:
            raise JaxslmError(
                f"{source.directory}: slamkit vocab_size {source.rows} is not "
                f"--speech-units {units} + 2"
            )
        return SpeechVocab.speech_only(units)
    text_size = len(_require_tokenizer(source))
    units = source.rows - text_size - 2 if units is None else units
    if units <= 0 or text_size + units + 2 != source.rows:
        raise JaxslmError(
            f"{source.tokenizer_dir}: tokenizer has {text_size} entries, so {units} units + 2 "
            f"markers give {text_size + units + 2} ids, but the slamkit weights have "
            f"{source.rows} rows; pass the base model's tokenizer and the right --speech-units"
        )
    # slamkit's base_config carries its unit-tokeniser ids (pad 0, bos/eos 1), not the text ones.
    vocab = SpeechVocab("interleaved", text_size, units)
    return _with_special_ids(vocab, source, use_config_ids=False)


def _require_tokenizer(source: VocabSource) -> HFTokenizer:
    if source.tokenizer is None:
        raise JaxslmError(
            f"{source.directory}: interleaved mode places unit ids after the text tokenizer, but "
            f"there is no {TOKENIZER_FILE} here; pass --tokenizer DIR (the base text model's "
            "directory)"
        )
    return source.tokenizer


def _exported_vocab(source: VocabSource, vocab: SpeechVocab) -> SpeechVocab:
    """The layout recorded by `export-hf`, checked against the weights and tokenizer."""
    if source.rows != vocab.size:
        raise JaxslmError(
            f"{source.directory / 'config.json'}: {SPEECH_VOCAB_KEY} describes {vocab.size} "
            f"ids but vocab_size is {source.rows}"
        )
    tokenizer = source.tokenizer
    if vocab.mode == "interleaved" and (
        tokenizer is None
        or len(tokenizer) != vocab.size
        or tokenizer.token_to_id(unit_token(0)) != vocab.unit_offset
    ):
        raise JaxslmError(
            f"{source.directory}: exported by jaxslm with speech units, but its tokenizer does "
            f"not hold {unit_token(0)} at id {vocab.unit_offset}; restore the exported "
            "tokenizer files"
        )
    return vocab


def _with_special_ids(
    vocab: SpeechVocab, source: VocabSource, use_config_ids: bool = True
) -> SpeechVocab:
    """Text BOS/EOS/PAD ids: the model config's, else the tokenizer config's named tokens."""
    config = source.config if use_config_ids else {}
    eos = config.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    bos, pad = config.get("bos_token_id"), config.get("pad_token_id")
    if source.tokenizer is not None and not eos_ids:
        named = source.tokenizer.special_token_ids()
        bos, pad = named.get("bos_token", bos), named.get("pad_token", pad)
        eos_ids = (named["eos_token"],) if "eos_token" in named else ()
    return SpeechVocab(vocab.mode, vocab.text_size, vocab.num_units, bos, eos_ids, pad)


def output_tokenizer(tokenizer: HFTokenizer | None, vocab: SpeechVocab) -> HFTokenizer | None:
    """The tokenizer saved with the checkpoint: extended with units, or the unit tokenizer."""
    if vocab.mode == "speech-only":
        return speech_only_tokenizer(vocab)
    if tokenizer is not None and vocab.mode == "interleaved" and len(tokenizer) != vocab.size:
        tokenizer.extend(vocab)
    return tokenizer
