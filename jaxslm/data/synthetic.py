"""The built-in corpus: a deterministic toy spoken language that needs no download.

A lexicon spelled one letter per phone, a probabilistic grammar of sentences and short stories
(a story keeps its protagonist and ends on it), and "speech": every speaker renders each phone
as a few unit ids with random durations, then the frames are deduplicated. Everything derives
from `SyntheticConfig.seed`; record i of a stream depends only on (seed, stream, i).

Word times are exact in frames: a word ends where its last frame ends and starts half a frame
into its first frame. The half frame matters because slamkit cuts a word's units as
`units[bisect_left(ends, start) : bisect_right(ends, end)]`, which would also take the unit
ending exactly at the word's onset. Adjacent words never share a deduplicated unit.

The grammar lives in `jaxslm.data.synthetic_grammar`, the speakers in
`jaxslm.data.synthetic_speech` and the evaluation sets in `jaxslm.data.synthetic_eval`.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from jaxslm.data.records import TextDocument, Utterance, Word, dedup
from jaxslm.data.synthetic_grammar import Grammar, Sentences, make_classes
from jaxslm.data.synthetic_speech import Voices
from jaxslm.errors import JaxslmError

SPLITS = ("train", "validation")
_HELD_OUT_BUCKETS = 20
# Random streams: record i of stream s draws from np.random.default_rng([seed, s, i]). The
# evaluation sets (jaxslm.data.synthetic_eval) draw from SWUGGY_STREAM to CM_STORYCLOZE_STREAM,
# the preference set (jaxslm.data.synthetic_preference) from PREFERENCE_STREAM.
(
    LEXICON_STREAM,
    UTTERANCE_STREAM,
    TEXT_STREAM,
    SWUGGY_STREAM,
    SBLIMP_STREAM,
    STORYCLOZE_STREAM,
    TSTORYCLOZE_STREAM,
    CM_STORYCLOZE_STREAM,
    PREFERENCE_STREAM,
) = range(9)


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything the built-in corpus derives from; the same config gives the same corpus."""

    seed: int = 0
    num_units: int = 100
    num_speakers: int = 8
    lexicon_size: int = 300
    num_utterances: int = 4000
    num_text_documents: int = 4000
    num_validation: int = 200
    frame_seconds: float = 0.04
    speaker_variation: float = 0.2
    unit_noise: float = 0.03
    pause_probability: float = 0.15

    def __post_init__(self) -> None:
        minimums = {
            "seed": 0,
            "num_units": 8,
            "num_speakers": 1,
            "lexicon_size": 40,
            "num_utterances": 0,
            "num_text_documents": 0,
            "num_validation": 0,
        }
        for name, low in minimums.items():
            if getattr(self, name) < low:
                raise JaxslmError(
                    f"SyntheticConfig.{name}={getattr(self, name)}: use a value of at least {low}"
                )
        for name in ("speaker_variation", "unit_noise", "pause_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise JaxslmError(
                    f"SyntheticConfig.{name}={getattr(self, name)}: use a probability in [0, 1]"
                )
        if self.frame_seconds <= 0:
            raise JaxslmError(
                f"SyntheticConfig.frame_seconds={self.frame_seconds}: use a positive frame length"
            )


class SyntheticLanguage:
    """The toy language of a config: lexicon, grammar, speakers, and its record streams."""

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config or SyntheticConfig()
        rng = np.random.default_rng([self.config.seed, LEXICON_STREAM])
        self.grammar = Grammar(make_classes(rng, self.config.lexicon_size), rng)
        self._voices = Voices(self.config, rng)
        self.speakers = tuple(f"spk{index}" for index in range(self.config.num_speakers))
        self.lexicon = {word: tuple(word) for word in self.grammar.words()}

    def pronunciation(self, word: str, speaker: str) -> np.ndarray:
        """The unit runs (before durations and noise) `speaker` says `word` with (read-only)."""
        if speaker not in self.speakers:
            raise JaxslmError(f"speaker={speaker!r}: use one of {', '.join(self.speakers)}")
        return self._voices.pronunciation(word, self.speakers.index(speaker))

    def lexical_coverage(self, units: Sequence[int]) -> float:
        """Share of the non-silence units of `units` (deduplicated or not) that a parse into
        pronunciations of lexicon words (any speaker) covers: about 1 - unit noise for real
        speech of the language, low for random units."""
        return self._voices.lexical_coverage(units, self.lexicon)

    def utterances(self, n: int | None = None, split: str = "train") -> Iterator[Utterance]:
        """The first `n` spoken stories of `split` (default: the config's count for it)."""
        n = self._count(n, split, self.config.num_utterances)
        stories = itertools.islice(self.stories(UTTERANCE_STREAM, split), n)
        return (
            self.speak(f"synthetic-{split}-{k:06d}", sentences, self.draw_speaker(rng), rng)
            for k, (rng, sentences, _) in enumerate(stories)
        )

    def text_documents(self, n: int | None = None, split: str = "train") -> Iterator[TextDocument]:
        """The first `n` written stories of `split` (default: the config's count for it)."""
        n = self._count(n, split, self.config.num_text_documents)
        stories = itertools.islice(self.stories(TEXT_STREAM, split), n)
        return (
            TextDocument(f"synthetic-text-{split}-{k:06d}", story_text(sentences))
            for k, (_, sentences, _) in enumerate(stories)
        )

    def _count(self, n: int | None, split: str, train_default: int) -> int:
        if split not in SPLITS:
            raise JaxslmError(f"split={split!r}: use one of {', '.join(SPLITS)}")
        if n is None:
            return train_default if split == "train" else self.config.num_validation
        return n

    def stories(
        self, stream: int, split: str
    ) -> Iterator[tuple[np.random.Generator, Sentences, str]]:
        """Endless stories of `split` (by a hash of their text), with the generator that drew
        each and its protagonist; the generator continues into the story's rendering."""
        held_out = split == "validation"
        for index in itertools.count():
            rng = np.random.default_rng([self.config.seed, stream, index])
            sentences, hero = self.grammar.story(rng)
            if _is_held_out(sentences) == held_out:
                yield rng, sentences, hero

    def draw_speaker(self, rng: np.random.Generator) -> int:
        """A random speaker's index."""
        return int(rng.integers(self.config.num_speakers))

    def speak(
        self, utterance_id: str, sentences: Sentences, speaker: int, rng: np.random.Generator
    ) -> Utterance:
        """`sentences` said by `speaker`, as a deduplicated, word-aligned utterance."""
        frames, spans = self._voices.render(sentences, speaker, rng)
        units, durations = dedup(frames)
        seconds = self.config.frame_seconds
        spoken = [word for sentence in sentences for word in sentence]
        words = tuple(
            Word(f" {word}", (start + 0.5) * seconds, float(end * seconds))
            for word, (start, end) in zip(spoken, spans, strict=True)
        )
        return Utterance(
            id=utterance_id,
            units=units,
            durations=durations,
            frame_seconds=seconds,
            words=words,
            transcript="".join(word.text for word in words),
            speaker=self.speakers[speaker],
        )


def story_text(sentences: Sentences) -> str:
    """A story as plain text: sentences end with a period."""
    return " ".join(" ".join(sentence) + "." for sentence in sentences)


def _is_held_out(sentences: Sentences) -> bool:
    """Whether a story belongs to the validation side (a stable hash of its text)."""
    return zlib.crc32(story_text(sentences).encode()) % _HELD_OUT_BUCKETS == 0
