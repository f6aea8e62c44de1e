"""Text tokenizers behind one interface: BOS conventions and deterministic SentencePiece."""

import pytest

from jaxslm.errors import JaxslmError
from jaxslm.text_tokenizer import (
    HFTokenizer,
    SentencePieceTokenizer,
    load_text_tokenizer,
    train_sentencepiece,
)

TEXTS = [
    f"the {w} saw a {v} near the river number {i}"
    for i, (w, v) in enumerate(
        zip(["cat", "dog", "bird", "fox"] * 30, ["tree", "boat", "hill"] * 40, strict=True)
    )
]


def test_hf_bos_follows_the_family(llama_hf, qwen_hf):
    from transformers import AutoTokenizer

    for directory, has_bos in ((llama_hf[0], True), (qwen_hf[0], False)):
        ours = HFTokenizer.from_dir(directory)
        reference = AutoTokenizer.from_pretrained(directory)
        text = "the cat sat on the mat"
        assert ours.encode(text) == reference(text)["input_ids"]
        assert (
            ours.encode(text, add_special_tokens=False)
            == reference(text, add_special_tokens=False)["input_ids"]
        )
        assert (ours.bos_id is not None) == has_bos
        assert ours.eos_id == reference.eos_token_id


def test_sentencepiece_training_is_deterministic(tmp_path):
    first = train_sentencepiece(TEXTS, tmp_path / "a", vocab_size=120)
    second = train_sentencepiece(TEXTS, tmp_path / "b", vocab_size=120)
    pieces = [
        [(t.processor.id_to_piece(i), t.processor.get_score(i)) for i in range(len(t))]
        for t in (SentencePieceTokenizer(first), SentencePieceTokenizer(second))
    ]
    assert pieces[0] == pieces[1]
    tokenizer = load_text_tokenizer(first)
    assert isinstance(tokenizer, SentencePieceTokenizer) and len(tokenizer) == 120
    ids = tokenizer.encode("the fox saw a boat")
    assert ids[0] == tokenizer.bos_id == 1 and tokenizer.eos_id == 2
    assert tokenizer.decode(ids[1:]) == "the fox saw a boat"
    assert tokenizer.encode("the fox saw a boat", add_special_tokens=False) == ids[1:]


def test_unknown_tokenizer_path(tmp_path):
    with pytest.raises(JaxslmError, match="no text tokenizer"):
        load_text_tokenizer(tmp_path)
