"""The `tokenizer_config.json` that lets transformers' AutoTokenizer read an exported model
whose text tokenizer is a SentencePiece BPE `tokenizer.model` (the built-in corpus's, or one
trained by `jaxslm.data.build`): the Llama tokenizer class, which converts that file, its
special pieces, and the speech units and markers as added tokens at their jaxslm ids (without
them every unit would read as `<unk>`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jaxslm.text_tokenizer import SentencePieceTokenizer
from jaxslm.vocab import SpeechVocab


def _added(content: str, special: bool) -> dict[str, Any]:
    return {
        "content": content,
        "special": special,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "single_word": False,
    }


def sentencepiece_tokenizer_config(model_file: Path, vocab: SpeechVocab) -> dict[str, Any]:
    """The tokenizer config of `model_file` extended by `vocab`'s units and markers."""
    processor = SentencePieceTokenizer(model_file).processor
    specials = {
        name: processor.id_to_piece(index)
        for name, index in (
            ("unk_token", processor.unk_id()),
            ("bos_token", processor.bos_id()),
            ("eos_token", processor.eos_id()),
        )
        if index >= 0
    }
    decoder = {
        str(processor.piece_to_id(piece)): _added(piece, True) for piece in specials.values()
    }
    for offset, token in enumerate(vocab.added_tokens()):
        decoder[str(vocab.unit_offset + offset)] = _added(token, False)
    return {
        "tokenizer_class": "LlamaTokenizer",
        **specials,
        "add_bos_token": "bos_token" in specials,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
    }
