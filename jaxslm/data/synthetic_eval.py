"""The built-in corpus's evaluation sets: toy benchmarks in slamkit's pairing conventions,
drawn from the toy language's held-out stories and its speakers."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from jaxslm.data.synthetic import (
    CM_STORYCLOZE_STREAM,
    SBLIMP_STREAM,
    STORYCLOZE_STREAM,
    SWUGGY_STREAM,
    TSTORYCLOZE_STREAM,
    SyntheticLanguage,
    story_text,
)
from jaxslm.data.synthetic_grammar import CONSONANTS, CONTENT_SHARES, VOWELS, Sentences
from jaxslm.errors import JaxslmError

PHENOMENA = ("determiner_noun_order", "subject_verb_order", "noun_for_verb")
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
    content = [w for pos in CONTENT_SHARES for w in language.grammar.classes[pos]]
    lines = []
    for i in range(num_pairs):
        rng = np.random.default_rng([language.config.seed, SWUGGY_STREAM, i])
        word = content[rng.integers(len(content))]
        pair = {"word": word, "nonword": nonword(rng, word, language.lexicon)}
        lines += _spoken_lines(language, rng, f"{i}_", {k: [[w]] for k, w in pair.items()})
    return lines


def _sblimp_lines(language: SyntheticLanguage, num_pairs: int) -> list[dict]:
    """Grammatical sentences vs a broken variant, cycling through `PHENOMENA`."""
    grammar, lines = language.grammar, []
    for i in range(num_pairs):
        rng = np.random.default_rng([language.config.seed, SBLIMP_STREAM, i])
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
    grammar, seed = language.grammar, language.config.seed
    stories = list(itertools.islice(language.stories(STORYCLOZE_STREAM, "validation"), num_pairs))
    endings = [sentences[-1] for _, sentences, _ in stories]
    sets: dict[str, list[dict]] = {task: [] for task in EVAL_TASKS if "storycloze" in task}
    for i, (rng, sentences, hero) in enumerate(stories):
        *prompt, ending = sentences
        stranger = [grammar.stranger(rng, sentences) if w == hero else w for w in ending]
        subtle = {"correct": sentences, "incorrect": [*prompt, stranger]}
        sets["sstorycloze"] += _spoken_lines(language, rng, f"{i}_", subtle)
        topic_rng = np.random.default_rng([seed, TSTORYCLOZE_STREAM, i])
        other = _other_ending(topic_rng, endings, i)
        topic = {"correct": sentences, "incorrect": [*prompt, other]}
        sets["tstorycloze"] += _spoken_lines(language, topic_rng, f"{i}_", topic)
        for task, pair in (("sstorycloze_text", subtle), ("tstorycloze_text", topic)):
            sets[task] += [
                {"file_name": f"{i}_{k}.txt", "text": story_text(s)} for k, s in pair.items()
            ]
        pieces = {"mutual": prompt, "correct": [ending], "incorrect": [other]}
        cm_rng = np.random.default_rng([seed, CM_STORYCLOZE_STREAM, i])
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
    state; `text` is the words, or `story_text` when `punctuated`."""
    speaker, seed = language.draw_speaker(rng), int(rng.integers(2**63))
    lines = []
    for kind, sentences in pieces.items():
        name = f"{prefix}{kind}.wav"
        utterance = language.speak(name, sentences, speaker, np.random.default_rng(seed))
        lines.append(
            {
                "file_name": name,
                "units": utterance.units.tolist(),
                "duration": utterance.durations.tolist(),
                "text": story_text(sentences) if punctuated else _words(sentences),
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


def nonword(rng: np.random.Generator, word: str, lexicon: dict[str, tuple[str, ...]]) -> str:
    """`word` with one phone swapped for another of its class, not in the lexicon."""
    while True:
        index = int(rng.integers(len(word)))
        alphabet = VOWELS if word[index] in VOWELS else CONSONANTS
        phone = alphabet[rng.integers(len(alphabet))]
        candidate = word[:index] + phone + word[index + 1 :]
        if candidate not in lexicon:
            return candidate


def _words(sentences: Sentences) -> str:
    """A piece's words separated by spaces, without punctuation."""
    return " ".join(word for sentence in sentences for word in sentence)


def _write_jsonl(path: Path, lines: Iterable[dict]) -> None:
    """One JSON object per line, written to a temporary sibling and renamed into place."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w") as handle:
            handle.writelines(json.dumps(line) + "\n" for line in lines)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
