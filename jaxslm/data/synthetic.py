"""The built-in corpus: a deterministic toy spoken language that needs no download.

A lexicon spelled one letter per phone, a probabilistic grammar of sentences and short stories
(a story keeps its protagonist and ends on it), and "speech": every speaker renders each phone
as a few unit ids with random durations, then the frames are deduplicated. Everything derives
from `SyntheticConfig.seed`; record i of a stream depends only on (seed, stream, i).

Word times are exact in frames: a word ends where its last frame ends and starts half a frame
into its first frame. The half frame matters because slamkit cuts a word's units as
`units[bisect_left(ends, start) : bisect_right(ends, end)]`, which would also take the unit
ending exactly at the word's onset. Adjacent words never share a deduplicated unit.
"""

from __future__ import annotations

import itertools
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxslm.data.records import TextDocument, Utterance, Word, dedup
from jaxslm.errors import JaxslmError

CONSONANTS = "ptkbdgmnszfvlrhjw"
VOWELS = "aeiou"
SPLITS = ("train", "validation")
PHENOMENA = ("determiner_noun_order", "subject_verb_order", "noun_for_verb")

_FUNCTION_WORDS = {"det": 4, "prep": 6, "conj": 3}
_CONTENT_SHARES = {"noun": 0.4, "verb_i": 0.15, "verb_t": 0.2, "adj": 0.17, "adv": 0.08}
_FUNCTION_SHAPES = ("CV", "VC")
_CONTENT_SHAPES = ("CV", "CVC", "VCV", "CVCV", "CVCVC", "VCVC", "CVCCV")
_CONTENT_SHAPE_WEIGHTS = (0.05, 0.25, 0.1, 0.3, 0.15, 0.05, 0.1)
_ZIPF_EXPONENT = 0.8
_PREFERRED_OBJECTS = 5
_SILENCE_UNITS = 2
_HELD_OUT_BUCKETS = 20
_LEXICON, _UTTERANCES, _TEXTS, _SWUGGY, _SBLIMP, _STORYCLOZE = range(6)
_TSTORYCLOZE, _CM_STORYCLOZE = 6, 7
EVAL_TASKS = (
    "swuggy",
    "sblimp",
    "sstorycloze",
    "tstorycloze",
    "sstorycloze_text",
    "tstorycloze_text",
    "cm_storycloze",
)
EVAL_PAIRS = 500
EVAL_SETS_VERSION = 2  # bump whenever write_eval_sets writes different files

Sentences = list[list[str]]


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
        rng = np.random.default_rng([self.config.seed, _LEXICON])
        self._grammar = _Grammar(_make_classes(rng, self.config.lexicon_size), rng)
        self._voices = _Voices(self.config, rng)
        self.speakers = tuple(f"spk{index}" for index in range(self.config.num_speakers))
        self.lexicon = {word: tuple(word) for word in self._grammar.words()}

    def pronunciation(self, word: str, speaker: str) -> np.ndarray:
        """The unit runs (before durations and noise) `speaker` says `word` with (read-only)."""
        if speaker not in self.speakers:
            raise JaxslmError(f"speaker={speaker!r}: use one of {', '.join(self.speakers)}")
        return self._voices.pronunciation(word, self.speakers.index(speaker))

    def lexical_coverage(self, units: Sequence[int]) -> float:
        """Share of the non-silence units of `units` (deduplicated or not) that a parse into
        pronunciations of lexicon words (any speaker) covers: about 1 - unit noise for real
        speech of the language, low for random units."""
        silence = {int(u) for u in self._voices.silence}
        words: dict[int, set[tuple[int, ...]]] = {}
        for word in self.lexicon:
            for speaker in range(self.config.num_speakers):
                spoken = tuple(dedup(self._voices.pronunciation(word, speaker))[0].tolist())
                words.setdefault(spoken[0], set()).add(spoken)
        runs = dedup(np.asarray(units))[0].tolist()
        covered = total = 0
        segment: list[int] = []
        for unit in [*runs, next(iter(silence))]:
            if unit not in silence:
                segment.append(unit)
                continue
            covered += _longest_cover(segment, words)
            total += len(segment)
            segment = []
        return covered / total if total else 0.0

    def utterances(self, n: int | None = None, split: str = "train") -> Iterator[Utterance]:
        """The first `n` spoken stories of `split` (default: the config's count for it)."""
        n = self._count(n, split, self.config.num_utterances)
        stories = itertools.islice(self._stories(_UTTERANCES, split), n)
        return (
            self._speak(f"synthetic-{split}-{k:06d}", sentences, self._speaker(rng), rng)
            for k, (rng, sentences, _) in enumerate(stories)
        )

    def text_documents(self, n: int | None = None, split: str = "train") -> Iterator[TextDocument]:
        """The first `n` written stories of `split` (default: the config's count for it)."""
        n = self._count(n, split, self.config.num_text_documents)
        stories = itertools.islice(self._stories(_TEXTS, split), n)
        return (
            TextDocument(f"synthetic-text-{split}-{k:06d}", _text(sentences))
            for k, (_, sentences, _) in enumerate(stories)
        )

    def _count(self, n: int | None, split: str, train_default: int) -> int:
        if split not in SPLITS:
            raise JaxslmError(f"split={split!r}: use one of {', '.join(SPLITS)}")
        if n is None:
            return train_default if split == "train" else self.config.num_validation
        return n

    def _stories(
        self, stream: int, split: str
    ) -> Iterator[tuple[np.random.Generator, Sentences, str]]:
        """Endless stories of `split` (by a hash of their text), with the generator that drew
        each and its protagonist; the generator continues into the story's rendering."""
        held_out = split == "validation"
        for index in itertools.count():
            rng = np.random.default_rng([self.config.seed, stream, index])
            sentences, hero = self._grammar.story(rng)
            if _is_held_out(sentences) == held_out:
                yield rng, sentences, hero

    def _speaker(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.config.num_speakers))

    def _speak(
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


def _longest_cover(segment: list[int], words: dict[int, set[tuple[int, ...]]]) -> int:
    """Most units of `segment` covered by non-overlapping word pronunciations (dynamic program)."""
    best = [0] * (len(segment) + 1)
    for start in range(len(segment)):
        best[start + 1] = max(best[start + 1], best[start])
        for spoken in words.get(segment[start], ()):
            end = start + len(spoken)
            if tuple(segment[start:end]) == spoken:
                best[end] = max(best[end], best[start] + len(spoken))
    return best[-1]


class _Grammar:
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


class _Voices:
    """Speakers: per-speaker phone -> unit renderings, speaking rates, and silence units."""

    def __init__(self, config: SyntheticConfig, rng: np.random.Generator) -> None:
        self.config = config
        order = rng.permutation(config.num_units)
        self.silence, self.pool = order[:_SILENCE_UNITS], np.sort(order[_SILENCE_UNITS:])
        base = _base_renderings(rng, self.pool)
        self.renderings = [
            _vary(rng, base, self.pool, config.speaker_variation)
            for _ in range(config.num_speakers)
        ]
        self.rates = rng.uniform(0.2, 0.6, size=config.num_speakers)
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def pronunciation(self, word: str, speaker: int) -> np.ndarray:
        """The unit runs of `word` (spelled one letter per phone) for `speaker`."""
        key = (word, speaker)
        if key not in self._cache:
            phones = self.renderings[speaker]
            self._cache[key] = np.concatenate([phones[phone] for phone in word])
            self._cache[key].flags.writeable = False
        return self._cache[key]

    def render(
        self, sentences: Sentences, speaker: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Frame-level units of `sentences` and each word's [first, end) frame.

        Silence surrounds the utterance and follows every sentence; a word may be followed by
        a short pause; a silence run separates two words that would share a unit after dedup.
        """
        words = [word for sentence in sentences for word in sentence]
        pieces = self._noisy([self.pronunciation(word, speaker) for word in words], rng)
        pauses = rng.random(len(words)) < self.config.pause_probability
        pauses[np.cumsum([len(sentence) for sentence in sentences]) - 1] = True
        runs, run_spans = [-1], []
        for piece, pause in zip(pieces, pauses, strict=True):
            if runs[-1] == piece[0]:
                runs.append(-1)
            run_spans.append((len(runs), len(runs) + len(piece)))
            runs.extend(piece.tolist())
            if pause:
                runs.append(-1)
        runs = np.asarray(runs)
        silent = runs < 0
        runs[silent] = rng.choice(self.silence, size=int(silent.sum()))
        durations = 1 + rng.binomial(3, self.rates[speaker], size=runs.size)
        offsets = np.concatenate([[0], np.cumsum(durations)])
        frame_spans = [(int(offsets[a]), int(offsets[b])) for a, b in run_spans]
        return np.repeat(runs, durations), frame_spans

    def _noisy(self, pieces: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """`pieces` with each run replaced by a random speech unit with prob `unit_noise`."""
        flat = np.concatenate(pieces)
        hit = rng.random(flat.size) < self.config.unit_noise
        flat[hit] = rng.choice(self.pool, size=int(hit.sum()))
        return np.split(flat, np.cumsum([len(piece) for piece in pieces])[:-1])


def write_eval_sets(
    language: SyntheticLanguage, out_dir: str | Path, num_pairs: int = EVAL_PAIRS
) -> dict[str, Path]:
    """Write the toy benchmarks, `<task>.jsonl` for each of `EVAL_TASKS`; returns task -> path.

    Speech lines are `{file_name, units, duration, text}`, text lines `{file_name, text}`. As in
    slamkit's folders, a stable sort by the integer prefix of `file_name` gives consecutive
    (positive, negative) pairs, positive first:

    - swuggy: `{i}_word.wav`, `{i}_nonword.wav`: a word vs a same-length non-word.
    - sblimp: `{i}+grammatical.wav`, `{i}+ungrammatical.wav`, with `phenomenon`.
    - sstorycloze: `{i}_correct.wav`, `{i}_incorrect.wav`: a held-out story vs the same story
      ending on a noun it never mentions.
    - tstorycloze: the same stories vs their prompt closed by another story's ending.
    - sstorycloze_text, tstorycloze_text: those pairs as text, `{i}_correct.txt`, ...
    - cm_storycloze: `{i}_mutual.wav`, `{i}_correct.wav`, `{i}_incorrect.wav`, each piece said
      on its own: a story's prompt, its ending, and tstorycloze's wrong ending.

    Speech `text` is the words alone, except in cm_storycloze where, as in the text sets, each
    sentence ends with a period. `num_pairs` is 0 or at least 2 (tstorycloze needs two stories).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "swuggy": _swuggy_lines(language, num_pairs),
        "sblimp": _sblimp_lines(language, num_pairs),
        **_storycloze_sets(language, num_pairs),
    }
    paths = {task: out_dir / f"{task}.jsonl" for task in EVAL_TASKS}
    for task in EVAL_TASKS:
        _write_jsonl(paths[task], files[task])
    return paths


def _swuggy_lines(language: SyntheticLanguage, num_pairs: int) -> list[dict]:
    """Content words vs same-length non-words, each said alone by the same speaker."""
    content = [w for pos in _CONTENT_SHARES for w in language._grammar.classes[pos]]
    lines = []
    for i in range(num_pairs):
        rng = np.random.default_rng([language.config.seed, _SWUGGY, i])
        word = content[rng.integers(len(content))]
        pair = {"word": word, "nonword": _nonword(rng, word, language.lexicon)}
        lines += _spoken_lines(language, rng, f"{i}_", {k: [[w]] for k, w in pair.items()})
    return lines


def _sblimp_lines(language: SyntheticLanguage, num_pairs: int) -> list[dict]:
    """Grammatical sentences vs a broken variant, cycling through `PHENOMENA`."""
    grammar, lines = language._grammar, []
    for i in range(num_pairs):
        rng = np.random.default_rng([language.config.seed, _SBLIMP, i])
        phenomenon = PHENOMENA[i % len(PHENOMENA)]
        subject = grammar.noun_phrase(rng)
        sentence = subject + grammar.predicate(rng)
        broken = _break(sentence, len(subject) - 1, phenomenon, grammar.pick(rng, "noun"))
        pair = {"grammatical": [sentence], "ungrammatical": [broken]}
        pair_lines = _spoken_lines(language, rng, f"{i}+", pair)
        lines += [{**line, "phenomenon": phenomenon} for line in pair_lines]
    return lines


def _storycloze_sets(language: SyntheticLanguage, num_pairs: int) -> dict[str, list[dict]]:
    """The StoryCloze tasks of `write_eval_sets`, all over the same held-out stories."""
    grammar, seed = language._grammar, language.config.seed
    stories = list(itertools.islice(language._stories(_STORYCLOZE, "validation"), num_pairs))
    endings = [sentences[-1] for _, sentences, _ in stories]
    sets: dict[str, list[dict]] = {task: [] for task in EVAL_TASKS if "storycloze" in task}
    for i, (rng, sentences, hero) in enumerate(stories):
        *prompt, ending = sentences
        stranger = [grammar.stranger(rng, sentences) if w == hero else w for w in ending]
        subtle = {"correct": sentences, "incorrect": [*prompt, stranger]}
        sets["sstorycloze"] += _spoken_lines(language, rng, f"{i}_", subtle)
        topic_rng = np.random.default_rng([seed, _TSTORYCLOZE, i])
        other = _other_ending(topic_rng, endings, i)
        topic = {"correct": sentences, "incorrect": [*prompt, other]}
        sets["tstorycloze"] += _spoken_lines(language, topic_rng, f"{i}_", topic)
        for task, pair in (("sstorycloze_text", subtle), ("tstorycloze_text", topic)):
            sets[task] += [{"file_name": f"{i}_{k}.txt", "text": _text(s)} for k, s in pair.items()]
        pieces = {"mutual": prompt, "correct": [ending], "incorrect": [other]}
        cm_rng = np.random.default_rng([seed, _CM_STORYCLOZE, i])
        sets["cm_storycloze"] += _spoken_lines(language, cm_rng, f"{i}_", pieces, punctuated=True)
    return sets


def _other_ending(rng: np.random.Generator, endings: Sentences, index: int) -> list[str]:
    """A random one of `endings` that differs from story `index`'s own."""
    others = [ending for ending in endings if ending != endings[index]]
    if not others:
        raise JaxslmError(
            f"num_pairs={len(endings)}: tStoryCloze takes its wrong endings from other stories; "
            "use num_pairs of at least 2"
        )
    return others[rng.integers(len(others))]


def _spoken_lines(
    language: SyntheticLanguage,
    rng: np.random.Generator,
    prefix: str,
    pieces: dict[str, Sentences],
    punctuated: bool = False,
) -> list[dict]:
    """Unit lines of `pieces` (a pair, or cm's three), said by one speaker from one random
    state; `text` is the words, or `_text` when `punctuated`."""
    speaker, seed = language._speaker(rng), int(rng.integers(2**63))
    lines = []
    for kind, sentences in pieces.items():
        name = f"{prefix}{kind}.wav"
        utterance = language._speak(name, sentences, speaker, np.random.default_rng(seed))
        lines.append(
            {
                "file_name": name,
                "units": utterance.units.tolist(),
                "duration": utterance.durations.tolist(),
                "text": _text(sentences) if punctuated else _words(sentences),
            }
        )
    return lines


def _break(sentence: list[str], head: int, phenomenon: str, noun: str) -> list[str]:
    """`sentence` (det [adj] noun verb ...; subject noun at `head`) made ungrammatical."""
    words = list(sentence)
    if phenomenon == "determiner_noun_order":
        words[0], words[1] = words[1], words[0]
    elif phenomenon == "subject_verb_order":
        words[head], words[head + 1] = words[head + 1], words[head]
    else:
        words[head + 1] = noun
    return words


def _nonword(rng: np.random.Generator, word: str, lexicon: dict[str, tuple[str, ...]]) -> str:
    """`word` with one phone swapped for another of its class, not in the lexicon."""
    while True:
        index = int(rng.integers(len(word)))
        alphabet = VOWELS if word[index] in VOWELS else CONSONANTS
        phone = alphabet[rng.integers(len(alphabet))]
        candidate = word[:index] + phone + word[index + 1 :]
        if candidate not in lexicon:
            return candidate


def _make_classes(rng: np.random.Generator, size: int) -> dict[str, list[str]]:
    """`size` distinct words split into parts of speech; function words are two phones."""
    sizes = dict(_FUNCTION_WORDS)
    content = size - sum(sizes.values())
    for pos, share in list(_CONTENT_SHARES.items())[1:]:
        sizes[pos] = max(2, round(content * share))
    sizes["noun"] = size - sum(sizes.values())
    seen: set[str] = set()
    classes = {}
    for pos in [*_FUNCTION_WORDS, *_CONTENT_SHARES]:
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


def _base_renderings(rng: np.random.Generator, pool: np.ndarray) -> dict[str, np.ndarray]:
    """Each phone as 1-2 (consonant) or 2-3 (vowel) units, distinct while the pool lasts."""
    phones = CONSONANTS + VOWELS
    lengths = [int(rng.integers(1, 3) if p in CONSONANTS else rng.integers(2, 4)) for p in phones]
    units = np.resize(rng.permutation(pool), sum(lengths))
    return dict(zip(phones, np.split(units, np.cumsum(lengths)[:-1]), strict=True))


def _vary(
    rng: np.random.Generator, base: dict[str, np.ndarray], pool: np.ndarray, variation: float
) -> dict[str, np.ndarray]:
    """A speaker's renderings: each unit of `base` swapped for a random one with prob
    `variation`."""
    speaker = {}
    for phone, units in base.items():
        changed = rng.random(units.size) < variation
        speaker[phone] = np.where(changed, rng.choice(pool, size=units.size), units)
    return speaker


def _text(sentences: Sentences) -> str:
    """A story as plain text: sentences end with a period."""
    return " ".join(" ".join(sentence) + "." for sentence in sentences)


def _words(sentences: Sentences) -> str:
    """A piece's words separated by spaces, without punctuation."""
    return " ".join(word for sentence in sentences for word in sentence)


def _is_held_out(sentences: Sentences) -> bool:
    """Whether a story belongs to the validation side (a stable hash of its text)."""
    return zlib.crc32(_text(sentences).encode()) % _HELD_OUT_BUCKETS == 0


def _write_jsonl(path: Path, lines: Iterable[dict]) -> None:
    """One JSON object per line, written to a temporary sibling and renamed into place."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w") as handle:
            handle.writelines(json.dumps(line) + "\n" for line in lines)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
