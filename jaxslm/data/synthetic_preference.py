"""The built-in toy language's preference set: a story's beginning as the prompt, its real
ending as the chosen continuation, and the same ending with one content word swapped for a
non-word as the rejected one. The chosen continuation stays in the lexicon and the rejected
one does not, which `SyntheticLanguage.lexical_coverage` measures.

8,000 training pairs, so that the toy DPO run (configs/tiny_dpo.yaml: 300 steps of 16 pairs)
meets every non-word once instead of learning 2,000 of them by heart over 2.4 epochs (held-out
reward accuracy 75.3% instead of 70.8% over 1,000 held-out pairs); 500 held-out pairs, so that
its held-out accuracy is known to about +-2%."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from jaxslm.data.preference import PreferencePair, Side
from jaxslm.data.synthetic import PREFERENCE_STREAM, SyntheticLanguage, story_text
from jaxslm.data.synthetic_eval import nonword
from jaxslm.data.synthetic_grammar import Sentences

PAIRS = {"train": 8000, "validation": 500}
# Positions in a story's ending (conj det hero verb [adv]) that may become a non-word.
_CONTENT_POSITIONS = slice(2, None)


def synthetic_pairs(language: SyntheticLanguage, split: str) -> Iterator[PreferencePair]:
    """The toy preference pairs of `split` (`PAIRS[split]` of them), each from one story of
    the split (held-out stories for validation), said by one speaker.

    The prompt is every sentence but the last, the chosen continuation the last sentence, the
    rejected one that sentence with its protagonist, verb or adverb replaced by a non-word (a
    phone swapped, as sWUGGY's non-words). Each piece is its own utterance; both
    continuations are rendered from the same random state."""
    stories = itertools.islice(language.stories(PREFERENCE_STREAM, split), PAIRS[split])
    for index, (rng, sentences, _) in enumerate(stories):
        *prompt, ending = sentences
        position = int(rng.integers(len(ending) - _CONTENT_POSITIONS.start))
        position += _CONTENT_POSITIONS.start
        broken = list(ending)
        broken[position] = nonword(rng, ending[position], language.lexicon)
        speaker, seed = language.draw_speaker(rng), int(rng.integers(2**63))
        pieces = {"prompt": (prompt, seed + 1), "chosen": ([ending], seed)}
        pieces["rejected"] = ([broken], seed)
        name = f"preference-{split}-{index:06d}"
        sides = {
            kind: _spoken(language, f"{name}-{kind}", piece, speaker, state)
            for kind, (piece, state) in pieces.items()
        }
        yield PreferencePair(name, **sides)


def _spoken(
    language: SyntheticLanguage, name: str, piece: Sentences, speaker: int, state: int
) -> Side:
    """`piece` said by `speaker` from random state `state`: its units and its text."""
    utterance = language.speak(name, piece, speaker, np.random.default_rng(state))
    return Side(utterance.units, story_text(piece))
