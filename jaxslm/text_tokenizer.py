"""Text tokenizers behind one interface, and the speech-extended tokenizer files jaxslm writes.

HF `tokenizer.json` files are read with the `tokenizers` library (no transformers needed);
SentencePiece models with `sentencepiece`. Both follow their family's BOS convention:
`encode(text)` adds BOS where the tokenizer does (Llama 3, our SentencePiece models), and
`encode(text, add_special_tokens=False)` never does.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import sentencepiece as spm
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

from jaxslm.errors import JaxslmError
from jaxslm.vocab import SPEECH_ONLY_BOUNDARY, SPEECH_ONLY_PAD, SpeechVocab

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
COPIED_FILES = ("tokenizer_config.json", "special_tokens_map.json")


class TextTokenizer(Protocol):
    """What the data pipeline needs from a text tokenizer."""

    bos_id: int | None
    eos_id: int | None

    def __len__(self) -> int: ...

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class HFTokenizer:
    """A HF fast tokenizer (`tokenizer.json`) plus the config files that travel with it."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        source_dir: Path | None = None,
        config_overrides: dict[str, str] | None = None,
    ):
        self.tokenizer = tokenizer
        self.source_dir = source_dir
        self.config_overrides = config_overrides or {}

    @classmethod
    def from_dir(cls, directory: str | Path) -> HFTokenizer:
        """Load `DIR/tokenizer.json`."""
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise JaxslmError(
                f"{path}: no HF fast tokenizer here; point --tokenizer at a directory with "
                f"{TOKENIZER_FILE} (sentencepiece-only tokenizers are not supported for import)"
            )
        try:
            return cls(Tokenizer.from_file(str(path)), Path(directory))
        except Exception as err:
            raise JaxslmError(f"{path}: cannot be read as a HF tokenizer ({err})") from err

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int | None:
        """The id `encode` puts first, or None for families without BOS (Qwen2.5)."""
        plain = self.encode("a", add_special_tokens=False)
        special = self.encode("a", add_special_tokens=True)
        return special[0] if len(special) > len(plain) and special[-len(plain) :] == plain else None

    @property
    def eos_id(self) -> int | None:
        """The EOS id named in tokenizer_config.json, if any."""
        return self.special_token_ids().get("eos_token")

    def token_to_id(self, token: str) -> int | None:
        """Id of `token`, or None when absent."""
        return self.tokenizer.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`, with the family's BOS convention when `add_special_tokens`."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`."""
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def special_token_ids(self) -> dict[str, int]:
        """Ids of the bos/eos/pad tokens named in the source's tokenizer_config.json."""
        path = None if self.source_dir is None else self.source_dir / TOKENIZER_CONFIG
        config = json.loads(path.read_text()) if path is not None and path.is_file() else {}
        ids = {}
        for role in ("bos_token", "eos_token", "pad_token"):
            token = config.get(role)
            token = token.get("content") if isinstance(token, dict) else token
            if token is not None and self.token_to_id(token) is not None:
                ids[role] = self.token_to_id(token)
        return ids

    def extend(self, vocab: SpeechVocab) -> None:
        """Append the unit and modality tokens of an interleaved vocab at their expected ids."""
        if len(self) != vocab.text_size:
            raise JaxslmError(
                f"tokenizer has {len(self)} entries but the vocabulary expects {vocab.text_size}"
            )
        added = vocab.added_tokens()
        self.tokenizer.add_tokens([AddedToken(t, normalized=False) for t in added])
        if len(self) != vocab.size or self.token_to_id(added[0]) != vocab.unit_offset:
            raise JaxslmError(
                f"the text tokenizer already holds some of {added[0]}..{added[-1]}; it cannot "
                "be extended with speech units at the slamkit ids"
            )

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json and the source's config files, listing the added tokens."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(directory / TOKENIZER_FILE))
        for name in COPIED_FILES:
            if self.source_dir is not None and (self.source_dir / name).is_file():
                shutil.copyfile(self.source_dir / name, directory / name)
        config_path = directory / TOKENIZER_CONFIG
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        config.update(self.config_overrides)
        if "added_tokens_decoder" in config:
            config["added_tokens_decoder"] = self._added_tokens_decoder()
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    def _added_tokens_decoder(self) -> dict[str, dict]:
        decoder = {}
        for token_id, token in sorted(self.tokenizer.get_added_tokens_decoder().items()):
            decoder[str(token_id)] = {
                "content": token.content,
                "lstrip": token.lstrip,
                "normalized": token.normalized,
                "rstrip": token.rstrip,
                "single_word": token.single_word,
                "special": token.special,
            }
        return decoder


def speech_only_tokenizer(vocab: SpeechVocab) -> HFTokenizer:
    """A word-level tokenizer over `<PAD>`, `<S>` and the units, as slamkit's unit tokeniser."""
    tokens = vocab.added_tokens()
    tokenizer = Tokenizer(
        models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=SPEECH_ONLY_PAD)
    )
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False) for t in tokens])
    special = {
        "bos_token": SPEECH_ONLY_BOUNDARY,
        "eos_token": SPEECH_ONLY_BOUNDARY,
        "pad_token": SPEECH_ONLY_PAD,
        "unk_token": SPEECH_ONLY_PAD,  # the word model's (else Qwen2Tokenizer adds one)
    }
    return HFTokenizer(tokenizer, config_overrides=special)


class SentencePieceTokenizer:
    """A SentencePiece model; `encode` adds BOS (id of `<s>`) when the model has one."""

    def __init__(self, model_file: str | Path):
        self.model_file = Path(model_file)
        try:
            self.processor = spm.SentencePieceProcessor(model_file=str(model_file))
        except (OSError, RuntimeError) as err:
            raise JaxslmError(
                f"{model_file}: cannot be read as a SentencePiece model ({err})"
            ) from err
        self.bos_id = self.processor.bos_id() if self.processor.bos_id() >= 0 else None
        self.eos_id = self.processor.eos_id() if self.processor.eos_id() >= 0 else None

    def __len__(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`, BOS first when `add_special_tokens`."""
        ids = self.processor.encode(text)
        return [self.bos_id, *ids] if add_special_tokens and self.bos_id is not None else ids

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`."""
        return self.processor.decode(list(ids))


def train_sentencepiece(texts: Iterable[str], model_prefix: str | Path, vocab_size: int) -> Path:
    """Train a BPE SentencePiece model on `texts` (deterministic: one thread, no sampling).

    Writes `model_prefix.model` and returns its path. Ids: 0 `<unk>`, 1 `<s>`, 2 `</s>`.
    """
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(model_prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        num_threads=1,
        pad_id=-1,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return Path(f"{model_prefix}.model")


def load_text_tokenizer(path: str | Path) -> TextTokenizer:
    """A directory with tokenizer.json, a `.model` SentencePiece file, or a directory with
    `tokenizer.model`."""
    path = Path(path)
    if path.is_dir() and (path / TOKENIZER_FILE).is_file():
        return HFTokenizer.from_dir(path)
    if path.is_dir() and (path / "tokenizer.model").is_file():
        return SentencePieceTokenizer(path / "tokenizer.model")
    if path.is_file() and path.suffix == ".model":
        return SentencePieceTokenizer(path)
    raise JaxslmError(
        f"{path}: no text tokenizer found; give a directory with {TOKENIZER_FILE} or "
        "tokenizer.model, or a SentencePiece .model file"
    )
