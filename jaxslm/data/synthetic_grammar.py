"""The built-in toy language's words and sentences: a lexicon spelled one letter per phone,
parts of speech with Zipf frequencies, and the grammar of sentences and short stories."""

from __future__ import annotations

import numpy as np

CONSONANTS = "ptkbdgmnszfvlrhjw"
VOWELS = "aeiou"
CONTENT_SHARES = {"noun": 0.4, "verb_i": 0.15, "verb_t": 0.2, "adj": 0.17, "adv": 0.08}

_FUNCTION_WORDS = {"det": 4, "prep": 6, "conj": 3}
_FUNCTION_SHAPES = ("CV", "VC")
_CONTENT_SHAPES = ("CV", "CVC", "VCV", "CVCV", "CVCVC", "VCVC", "CVCCV")
_CONTENT_SHAPE_WEIGHTS = (0.05, 0.25, 0.1, 0.3, 0.15, 0.05, 0.1)
_ZIPF_EXPONENT = 0.8
_PREFERRED_OBJECTS = 5

Sentences = list[list[str]]


class Grammar:
    """Parts of speech with Zipf word frequencies, and the sentence and story rules."""

    def __init__(self, classes: dict[str, list[str]], rng: np.random.Generator) -> None:
        self.classes = classes
        self._cdfs = {pos: _zipf_cdf(len(words)) for pos, words in classes.items()}
        nouns = classes["noun"]
        self._objects = {
            verb: [nouns[i] for i in rng.choice(len(nouns), _PREFERRED_OBJECTS, replace=False)]
            for verb in classes["verb_t"]
        }

    def words(self) -> list[str]:
        return [word for words in self.classes.values() for word in words]

    def pick(self, rng: np.random.Generator, pos: str) -> str:
        """A word of part of speech `pos`, frequent ones more often."""
        index = np.searchsorted(self._cdfs[pos], rng.random(), side="right")
        return self.classes[pos][index]

    def noun_phrase(self, rng: np.random.Generator, noun: str | None = None) -> list[str]:
        """det [adj] noun."""
        adjective = [self.pick(rng, "adj")] if rng.random() < 0.3 else []
        return [self.pick(rng, "det"), *adjective, noun or self.pick(rng, "noun")]

    def predicate(self, rng: np.random.Generator) -> list[str]:
        """verb_i [adv] or verb_t object (mostly one the verb prefers), then maybe a PP."""
        if rng.random() < 0.5:
            words = [self.pick(rng, "verb_i")]
            if rng.random() < 0.3:
                words.append(self.pick(rng, "adv"))
        else:
            verb = self.pick(rng, "verb_t")
            liked = rng.random() < 0.7
            obj = self._objects[verb][rng.integers(_PREFERRED_OBJECTS)] if liked else None
            words = [verb, *self.noun_phrase(rng, obj)]
        if rng.random() < 0.3:
            words += [self.pick(rng, "prep"), *self.noun_phrase(rng)]
        return words

    def story(self, rng: np.random.Generator) -> tuple[Sentences, str]:
        """3-5 sentences about one protagonist: introduced first, mostly the subject after,
        and the subject of the ending. Returns the sentences and the protagonist."""
        hero = self.pick(rng, "noun")
        introducing, definite = self.classes["det"][:2]
        sentences = [[introducing, self.pick(rng, "adj"), hero, *self.predicate(rng)]]
        for _ in range(rng.integers(1, 4)):
            subject = [definite, hero] if rng.random() < 0.7 else self.noun_phrase(rng)
            sentences.append([*subject, *self.predicate(rng)])
        sentences.append(self.ending(rng, hero))
        return sentences, hero

    def ending(self, rng: np.random.Generator, noun: str) -> list[str]:
        """conj det `noun` verb_i [adv]: the closing sentence, about `noun`."""
        words = [self.pick(rng, "conj"), self.classes["det"][1], noun, self.pick(rng, "verb_i")]
        return words + [self.pick(rng, "adv")] if rng.random() < 0.5 else words

    def stranger(self, rng: np.random.Generator, sentences: Sentences) -> str:
        """A noun that none of `sentences` mentions."""
        mentioned = {word for sentence in sentences for word in sentence}
        while (noun := self.pick(rng, "noun")) in mentioned:
            pass
        return noun


def make_classes(rng: np.random.Generator, size: int) -> dict[str, list[str]]:
    """`size` distinct words split into parts of speech; function words are two phones."""
    sizes = dict(_FUNCTION_WORDS)
    content = size - sum(sizes.values())
    for pos, share in list(CONTENT_SHARES.items())[1:]:
        sizes[pos] = max(2, round(content * share))
    sizes["noun"] = size - sum(sizes.values())
    seen: set[str] = set()
    classes = {}
    for pos in [*_FUNCTION_WORDS, *CONTENT_SHARES]:
        function = pos in _FUNCTION_WORDS
        shapes = _FUNCTION_SHAPES if function else _CONTENT_SHAPES
        weights = None if function else _CONTENT_SHAPE_WEIGHTS
        words = []
        while len(words) < sizes[pos]:
            word = _spell(rng, shapes[rng.choice(len(shapes), p=weights)])
            if word not in seen:
                seen.add(word)
                words.append(word)
        classes[pos] = words
    return classes


def _spell(rng: np.random.Generator, shape: str) -> str:
    """A random word of CV `shape`, one letter per phone."""
    return "".join(
        CONSONANTS[rng.integers(len(CONSONANTS))] if slot == "C" else VOWELS[rng.integers(5)]
        for slot in shape
    )


def _zipf_cdf(n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** _ZIPF_EXPONENT
    cdf = np.cumsum(weights) / weights.sum()
    cdf[-1] = 1.0
    return cdf
