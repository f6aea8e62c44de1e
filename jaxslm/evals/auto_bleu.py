"""slamkit's auto-BLEU, the repetition measure of its generative metrics and of its preference
filter (`calc_auto_bleu`, slamkit/utils/calculation_utils.py): the share of a sequence's
n-grams that occur again elsewhere in it, over NLTK's word tokens for text."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence

from jaxslm.errors import JaxslmError


def auto_bleu(tokens: Sequence, n: int = 2) -> float:
    """The share of the n-grams of `tokens` that occur again elsewhere in it; 0 when there
    are none."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(counts[gram] > 1 for gram in grams) / len(grams)


def text_auto_bleu(text: str, n: int = 2) -> float:
    """auto-BLEU over the words of `text`."""
    return auto_bleu(words(text), n)


def words(text: str) -> list[str]:
    """`text` split by NLTK's word tokenizer, as slamkit splits it."""
    return _word_tokenizer().tokenize(text)


@functools.cache
def _word_tokenizer():
    try:
        from nltk.tokenize import NLTKWordTokenizer
    except ImportError:
        raise JaxslmError(
            "auto-BLEU splits text into words with NLTK, as slamkit does: pip install nltk"
        ) from None
    return NLTKWordTokenizer()
