"""Tiny byte-level BPE tokenizers saved as HF files: the text side of the test models.

Needs `tokenizers` and transformers' tokenizer classes, not torch.
"""

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
QWEN_EOS = "<|endoftext|>"
CORPUS = [
    "the cat sat on the mat and the dog ran to the park",
    "speech language models learn from units and from text",
    "a small model can still learn the shape of a language",
    "every word carries its own leading space in the alignment",
] * 4


def train_bpe(texts: list[str], specials: tuple[str, ...] = ()) -> Tokenizer:
    """A byte-level BPE of at most 300 entries trained on `texts`; `specials` take the first
    ids."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def prepend_bos(tokenizer: Tokenizer) -> None:
    """Make `tokenizer` prepend BOS to every sequence, as Llama 3's does."""
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )


def build_tokenizer(directory, llama_style: bool = True):
    """A byte-level BPE tokenizer of a few hundred entries, saved as HF files in `directory`.

    Llama style adds BOS and names BOS/EOS; Qwen style adds nothing and has `<|endoftext|>`.
    """
    from transformers import PreTrainedTokenizerFast

    specials = (BOS, EOS) if llama_style else (QWEN_EOS, "<|im_start|>", "<|im_end|>")
    tokenizer = train_bpe(CORPUS, specials)
    if not llama_style:
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, eos_token=QWEN_EOS, pad_token=QWEN_EOS
        )
        fast.save_pretrained(directory)
        return fast
    prepend_bos(tokenizer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS)
    fast.save_pretrained(directory)
    return fast
