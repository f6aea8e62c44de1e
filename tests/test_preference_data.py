"""Preference corpora: JSONL ingestion with bad records counted by reason (or stopped at with
file:line under --strict), slamkit's repetition filter restated from its source, the toy
preference set, and the DPO sequences and packing."""

import json
import re

import numpy as np
import pytest

from jaxslm.data.build import main as build_main
from jaxslm.data.corpus import open_corpus
from jaxslm.data.preference import RepetitionFilter
from jaxslm.data.preference_batches import (
    EncodedPairs,
    PreferenceBatches,
    RowLayout,
    SequenceRules,
)
from jaxslm.data.preference_store import build_synthetic_preferences, open_preferences
from jaxslm.data.synthetic import SyntheticConfig, SyntheticLanguage
from jaxslm.data.synthetic_preference import synthetic_pairs
from jaxslm.evals.auto_bleu import auto_bleu
from jaxslm.vocab import SpeechVocab

UNITS = 50


def side(units, text=None):
    return {"units": units, "duration": [1] * len(units), **({"text": text} if text else {})}


GOOD = {"prompt": side([1, 2, 3]), "chosen": side([4, 5]), "rejected": side([6, 7])}
BAD_LINES = {
    "format: not JSON": "{not json",
    "format: not a preference record": json.dumps({"prompt": side([1]), "chosen": side([2])}),
    "chosen.units: out of range": json.dumps({**GOOD, "chosen": side([4, UNITS])}),
    "rejected.units: not integers": json.dumps({**GOOD, "rejected": side([6, 7.5])}),
    "pair: chosen equals rejected": json.dumps({**GOOD, "rejected": GOOD["chosen"]}),
    "prompt: empty": json.dumps({**GOOD, "prompt": side([])}),
    "id: duplicate": json.dumps({**GOOD, "id": "a"}),
}


def write_pairs(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_bad_records_are_counted_by_reason(tmp_path, capsys):
    good = [json.dumps({**GOOD, "id": "a"})] + [
        json.dumps({**GOOD, "id": f"g{i}", "chosen": side([4, i % UNITS])}) for i in range(20)
    ]
    source = write_pairs(tmp_path / "pairs.jsonl", good + list(BAD_LINES.values()))
    code = build_main(
        ["--preference", str(source), "--num-units", str(UNITS), "--out", str(tmp_path / "c")]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    skipped = open_corpus(tmp_path / "c").metadata["skipped"]
    assert skipped == dict.fromkeys(BAD_LINES, 1)
    counts = open_corpus(tmp_path / "c").metadata["counts"]["preference"]
    assert counts["train"] + counts["validation"] == len(good)


@pytest.mark.parametrize("reason", ["chosen.units: out of range", "id: duplicate"])
def test_strict_stops_at_file_and_line(tmp_path, capsys, reason):
    lines = [json.dumps({**GOOD, "id": "a"}), json.dumps(GOOD), BAD_LINES[reason]]
    source = write_pairs(tmp_path / "pairs.jsonl", lines)
    argv = ["--preference", str(source), "--num-units", str(UNITS), "--strict"]
    assert build_main([*argv, "--out", str(tmp_path / "c")]) == 2
    error = capsys.readouterr().err
    assert f"{source}:3: {reason.split(':')[0]}" in error, error
    assert not (tmp_path / "c").exists()


def slamkit_auto_bleu(tokens, n):
    """slamkit's calc_ngram + calc_auto_bleu (slamkit/utils/calculation_utils.py) restated:
    n-grams as space-joined strings; each counts when it occurs in the list before or after
    it; the count over the number of n-grams, 0 without any."""
    ngrams = [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not ngrams:
        return 0
    repeated = sum(g in ngrams[:i] or g in ngrams[i + 1 :] for i, g in enumerate(ngrams))
    return repeated / len(ngrams)


def test_auto_bleu_is_slamkits():
    rng = np.random.default_rng(0)
    for _ in range(200):
        tokens = [str(t) for t in rng.integers(0, 6, rng.integers(0, 15))]
        for n in (1, 2, 3):
            assert auto_bleu(tokens, n) == pytest.approx(slamkit_auto_bleu(tokens, n))


def test_repetition_filter_keeps_what_slamkit_keeps(tmp_path, capsys):
    """slamkit's filter: prompt_text + " " + chosen_text, NLTK words, auto-BLEU-2 < 0.3."""
    from nltk.tokenize import NLTKWordTokenizer

    texts = [
        ("the cat sat on the mat.", "It was happy."),
        ("the cat the cat the cat", "the cat again, the cat."),
        ("I said: go, go, go!", "And we went."),
        ("one two three", "one two three four"),
    ]
    lines = [
        json.dumps({**GOOD, "id": f"t{i}", "prompt_text": p, "chosen_text": c})
        for i, (p, c) in enumerate(texts)
    ]
    source = write_pairs(tmp_path / "pairs.jsonl", lines)
    out = tmp_path / "c"
    argv = ["--preference", str(source), "--num-units", str(UNITS), "--repetition-filter"]
    assert build_main([*argv, "--validation-fraction", "0", "--out", str(out)]) == 0
    words = NLTKWordTokenizer()
    kept_by_slamkit = [slamkit_auto_bleu(words.tokenize(f"{p} {c}"), 2) < 0.3 for p, c in texts]
    assert 0 < sum(kept_by_slamkit) < len(texts)
    pairs = open_preferences(open_corpus(out), "train")
    kept = [pairs.text("prompt", i) for i in range(len(pairs))]
    assert kept == [p for (p, _), keep in zip(texts, kept_by_slamkit, strict=True) if keep]
    assert RepetitionFilter().n == 2 and RepetitionFilter().max_auto_bleu == 0.3


def test_toy_pairs_stay_in_the_lexicon_or_leave_it(tmp_path):
    language = SyntheticLanguage(SyntheticConfig())
    lexicon = set(language.lexicon)
    prompts = {split: set() for split in ("train", "validation")}
    for split in prompts:
        for pair in synthetic_pairs(language, split):
            chosen, rejected = (re.findall(r"\w+", s.text) for s in (pair.chosen, pair.rejected))
            assert set(chosen) <= lexicon
            assert len(chosen) == len(rejected)
            changed = [(c, r) for c, r in zip(chosen, rejected, strict=True) if c != r]
            assert len(changed) == 1 and changed[0][1] not in lexicon
            for piece in (pair.prompt, pair.chosen, pair.rejected):
                assert piece.units is not None and piece.units.size
            prompts[split].add(pair.prompt.text)
    assert not prompts["train"] & prompts["validation"]
    corpus = open_corpus(build_synthetic_preferences(tmp_path / "toy"))
    assert corpus.metadata["counts"]["preference"] == {"train": 8000, "validation": 500}


def test_sequences_and_packing_follow_slamkit(tmp_path):
    """Speech-only ids (<S> = 1 is BOS and EOS, unit u is u + 2): BOS + prompt keeps its last
    4 ids, completion + EOS its first 3; each continuation's scored targets are its ids."""
    lines = [
        json.dumps({**GOOD, "id": "a", "prompt": side([1, 2, 3, 4, 5])}),
        json.dumps({**GOOD, "id": "b", "chosen": side([8]), "rejected": side([9, 9, 9, 9])}),
    ]
    source = write_pairs(tmp_path / "pairs.jsonl", lines)
    out = tmp_path / "c"
    argv = ["--preference", str(source), "--num-units", str(UNITS), "--validation-fraction", "0"]
    assert build_main([*argv, "--out", str(out)]) == 0
    vocab = SpeechVocab.speech_only(UNITS)
    rules = SequenceRules((1,), 1, 4, 3)
    pairs = open_preferences(open_corpus(out), "train")
    encoded = EncodedPairs(pairs, "speech", vocab, None, rules)
    prompt, chosen, rejected = encoded.sequences[0]
    assert prompt.tolist() == [4, 5, 6, 7] and chosen.tolist() == [6, 7, 1]
    assert encoded.sequences[1][2].tolist() == [11, 11, 11]
    for share in (True, False):
        layout = RowLayout(2, 32, 2, share)
        batch = next(PreferenceBatches(encoded, layout, 2, seed=0, shuffle=False))
        for k, (p, c, r) in enumerate(encoded.sequences):
            row, slot = np.argwhere(batch["pair_index"] == k)[0]
            for offset, completion in enumerate((c, r)):
                scored = batch["slot"][row] == 2 * slot + offset
                assert batch["targets"][row][scored].tolist() == completion.tolist()
                position = batch["positions"][row][scored][0]
                assert batch["tokens"][row][scored][0] == p[-1] and position == len(p) - 1


def test_sides_named_by_audio_take_their_units(tmp_path):
    """slamkit's extractor input ({side}_path only) with units from tokenize_audio output,
    matched by file_name, then by stem; a path in no unit file is a counted bad record."""
    units = {"a/p.wav": [1, 2, 3], "c.wav": [4, 5], "r.flac": [6]}
    unit_lines = [
        json.dumps({"file_name": name, "units": u, "duration": [1] * len(u)})
        for name, u in units.items()
    ]
    unit_file = write_pairs(tmp_path / "units.jsonl", unit_lines)
    lines = [
        json.dumps({"prompt_path": "a/p.wav", "chosen_path": "x/c.wav", "rejected_path": "r.wav"}),
        json.dumps({"prompt_path": "a/p.wav", "chosen_path": "lost.wav", "rejected_path": "r.wav"}),
    ]
    source = write_pairs(tmp_path / "pairs.jsonl", lines)
    out = tmp_path / "c"
    argv = ["--preference", str(source), "--preference-units", str(unit_file)]
    argv += ["--num-units", str(UNITS), "--validation-fraction", "0", "--out", str(out)]
    assert build_main(argv) == 0
    corpus = open_corpus(out)
    assert corpus.metadata["skipped"] == {"chosen_path: no units": 1}
    pairs = open_preferences(corpus, "train")
    got = [pairs.units(side, 0).tolist() for side in ("prompt", "chosen", "rejected")]
    assert got == [[1, 2, 3], [4, 5], [6]]


class LengthTokenizer:
    """A stand-in speech tokenizer: units [samples % 40, 1], so an oracle needs only the
    file's length (as tests/test_tokenize_rerun.py's)."""

    num_units, frame_seconds = UNITS, 0.02

    def units(self, waves):
        return [(np.array([len(w) % 40, 1]), np.array([1, 2])) for w in waves]


def test_audio_folder_goes_through_the_speech_tokenizer(tmp_path, monkeypatch):
    """--audio with --preference: the folder is tokenized and the sides' <side>_path files
    take their units from it."""
    import soundfile

    from jaxslm.speech.tokenizer import SpeechTokenizer

    folder = tmp_path / "audio"
    folder.mkdir()
    lengths = {"p.wav": 8005, "c.wav": 8011, "r.wav": 8017}
    for name, samples in lengths.items():
        soundfile.write(folder / name, np.full(samples, 0.1, np.float32), 16000)
    line = {f"{side}_path": f"clips/{side[0]}.wav" for side in ("prompt", "chosen", "rejected")}
    source = write_pairs(tmp_path / "pairs.jsonl", [json.dumps(line)])
    monkeypatch.setattr(SpeechTokenizer, "load", lambda *a, **k: LengthTokenizer())
    (tmp_path / "km").write_bytes(b"a stand-in codebook")  # the units cache is keyed by it
    out = tmp_path / "c"
    argv = ["--preference", source, "--audio", folder, "--hubert", tmp_path, "--codebook"]
    argv += [tmp_path / "km", "--validation-fraction", "0", "--out", out]
    assert build_main([str(a) for a in argv]) == 0
    pairs = open_preferences(open_corpus(out), "train")
    got = [pairs.units(side, 0).tolist() for side in ("prompt", "chosen", "rejected")]
    assert got == [[lengths[f"{side[0]}.wav"] % 40, 1] for side in ("prompt", "chosen", "rejected")]


def test_files_sharing_a_name_keep_every_pair(tmp_path, capsys):
    """Pairs without ids are named by file and line; two `pairs.jsonl` in different folders
    are told apart by their folders, not merged as duplicates."""
    lines = [json.dumps({**GOOD, "chosen": side([4, i])}) for i in range(5)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = [write_pairs(tmp_path / folder / "pairs.jsonl", lines) for folder in "ab"]
    out = tmp_path / "c"
    argv = ["--preference", *map(str, files), "--num-units", str(UNITS), "--out", str(out)]
    assert build_main([*argv, "--validation-fraction", "0"]) == 0, capsys.readouterr()
    assert open_corpus(out).metadata["counts"]["preference"]["train"] == 10
    assert build_main([*argv[:2], *argv[1:], "--overwrite"]) == 2
    assert f"{files[0]}: given twice" in capsys.readouterr().err


def test_a_pair_without_room_starts_the_next_batch():
    """Long pairs fit one to a row: a shuffled batch of more long pairs than rows would not
    pack. The pair that finds no room starts the next batch, so no batch fails mid-run, each
    epoch still holds every pair once, and a restored position gives the same batches."""
    from jaxslm.data.preference import PreferencePair, Side
    from jaxslm.data.preference_store import PreferenceSet, preference_arrays

    rng = np.random.default_rng(0)

    def units(count):
        return Side(rng.integers(0, UNITS, count).astype(np.int32))

    lengths = [(40, 30) if rng.random() < 0.3 else (4, 3) for _ in range(60)]
    pairs = [
        PreferencePair(f"p{i}", units(p), units(c), units(c)) for i, (p, c) in enumerate(lengths)
    ]
    rules = SequenceRules((1,), 1, 32, 20)  # a long pair: 32 + 21 + 21 - 1 = 73 of 128 positions
    encoded = EncodedPairs(
        PreferenceSet(preference_arrays(pairs)),
        "speech",
        SpeechVocab.speech_only(UNITS),
        None,
        rules,
    )
    layout = RowLayout(4, 128, 8, True)
    batches = PreferenceBatches(encoded, layout, 8, seed=0)
    seen, states, sizes = [], [], []
    for _ in range(40):
        states.append(batches.get_state())
        batch = next(batches)
        rows, slots = np.nonzero(batch["pair_valid"])
        held = batch["pair_index"][rows, slots].tolist()
        sizes.append(len(held))
        seen += sorted(held)
    assert min(sizes) < 8 == max(sizes)  # some batches of long pairs hold fewer
    epochs = [np.random.default_rng([0, e]).permutation(len(encoded)) for e in range(10)]
    order = np.concatenate(epochs)[: len(seen)].tolist()  # each epoch's order, in turn
    starts = np.cumsum([0, *sizes])
    bounds = zip(starts[:-1], starts[1:], strict=True)
    assert seen == [i for a, b in bounds for i in sorted(order[a:b])]
    again = PreferenceBatches(encoded, layout, 8, seed=0)
    again.set_state(states[7])
    replay = [next(again)["pair_index"].tolist() for _ in range(3)]
    fresh = PreferenceBatches(encoded, layout, 8, seed=0)
    expected = [next(fresh)["pair_index"].tolist() for _ in range(10)][7:]
    assert replay == expected
