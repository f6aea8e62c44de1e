"""Benchmark inputs, pairing conventions, sequence layouts and accuracy (no model: a stand-in
scorer whose log-likelihood is a sequence's last id makes every expected accuracy exact)."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxslm.errors import JaxslmError
from jaxslm.evals.items import load_items
from jaxslm.evals.pairing import numbered_pairs, salmon_pairs
from jaxslm.evals.runner import TaskRequest, run_task
from jaxslm.evals.tasks import SALMON_PARTS, SequenceBuilder, pairwise_accuracy, task_spec
from jaxslm.vocab import SpeechVocab, allowed_tokens

SPEECH_ONLY = SpeechVocab.speech_only(20)


class LastIdScorer:
    """Log-likelihood of a sequence = its last id (speech-only: the id before the final <S>)."""

    def log_likelihood(self, sequences, normalize="mean", modality=None, on_batch=None):
        if on_batch is not None:
            on_batch(len(sequences))
        return np.asarray([s[-2] if s[-1] == 1 else s[-1] for s in sequences], np.float64)

    def restriction(self, modality):
        return np.ones(1000, bool), -1


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"RIFF")


def _units_file(path: Path, units: dict[str, list[int]]) -> Path:
    lines = [
        json.dumps({"file_name": k, "units": v, "duration": [1] * len(v)}) for k, v in units.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_folder_pairs_follow_slamkit_numbering(tmp_path):
    root = tmp_path / "swuggy"
    # same integer: positive-looking names first whatever the lexical order; unique integers
    # sort numerically (10 after 2), not by name
    names = [
        "0_word.wav",
        "0_nonword.wav",
        "1_incorrect.wav",
        "1_correct.wav",
        "2_x.wav",
        "3_a.wav",
        "10_a.wav",
        "11_b.wav",
    ]
    _touch(root, *names)
    units = _units_file(tmp_path / "u.jsonl", {n: [i + 2] for i, n in enumerate(names)})
    pairs = numbered_pairs(load_items(root, units), "_", from_folder=True)
    assert [(p.name, n.name) for p, n in pairs] == [
        ("0_word", "0_nonword"),
        ("1_correct", "1_incorrect"),
        ("2_x", "3_a"),
        ("10_a", "11_b"),
    ]


def test_jsonl_keeps_file_order_within_an_integer(tmp_path):
    path = tmp_path / "sblimp.jsonl"
    lines = [("3+b.wav", [1]), ("3+a.wav", [2]), ("1+z.wav", [3]), ("1+y.wav", [4])]
    path.write_text("".join(json.dumps({"file_name": n, "units": u}) + "\n" for n, u in lines))
    pairs = numbered_pairs(load_items(path), "+", from_folder=False)
    assert [(p.name, n.name) for p, n in pairs] == [("1+z", "1+y"), ("3+b", "3+a")]


def test_subfolders_pair_separately_and_report_parts(tmp_path):
    root = tmp_path / "ms_ssc"
    scores = {
        "spk1/0_correct.wav": 9,
        "spk1/0_incorrect.wav": 5,
        "spk2/0_correct.wav": 3,
        "spk2/0_incorrect.wav": 7,
        "spk2/1_correct.wav": 4,
        "spk2/1_incorrect.wav": 4,
    }
    _touch(root, *scores)
    units = _units_file(tmp_path / "u.jsonl", {k: [v] for k, v in scores.items()})
    result = run_task(
        LastIdScorer(),
        SequenceBuilder(SPEECH_ONLY, None),
        TaskRequest("ms_sstorycloze", root, units),
        progress=False,
    )
    summary = result.summary
    assert summary["pairs"] == 3 and summary["accuracy"] == pytest.approx(0.5)
    assert summary["parts"] == {
        "spk1": {"accuracy": 1.0, "pairs": 1},
        "spk2": {"accuracy": 0.25, "pairs": 2},
    }
    assert [p["positive"] for p in result.pairs] == [
        "spk1/0_correct",
        "spk2/0_correct",
        "spk2/1_correct",
    ]


def test_units_are_found_by_relative_path_or_unique_name(tmp_path):
    root = tmp_path / "data"
    _touch(root, "a/0_x.wav", "a/1_y.wav", "b/0_x.wav", "b/3_w.wav")
    units = _units_file(
        tmp_path / "u.jsonl",
        {
            "a/0_x.wav": [1],
            str(root / "a/1_y.wav"): [2],
            "b/0_x.wav": [3],
            "3_w.wav": [4],
        },
    )
    found = {item.name: item.units.tolist() for item in load_items(root, units)}
    assert found == {"a/0_x": [1], "a/1_y": [2], "b/0_x": [3], "b/3_w": [4]}


def test_salmon_groups_by_index_and_sorts_by_name(tmp_path):
    root = tmp_path / "salmon"
    scores = {}
    for part_index, part in enumerate(SALMON_PARTS[:2]):
        for sample in range(3):
            positive_wins = (sample + part_index) % 2 == 0
            scores[f"{part}/s_{sample}_a.wav"] = 8 if positive_wins else 2
            scores[f"{part}/s_{sample}_b.wav"] = 5
    _touch(root, *scores)
    units = _units_file(tmp_path / "u.jsonl", {k: [v] for k, v in scores.items()})
    items = load_items(root / SALMON_PARTS[0], units)
    assert [(p.base, n.base) for p, n in salmon_pairs(items)] == [
        (f"s_{i}_a", f"s_{i}_b") for i in range(3)
    ]
    summary = run_task(
        LastIdScorer(),
        SequenceBuilder(SPEECH_ONLY, None),
        TaskRequest("salmon", root, units),
        progress=False,
    ).summary
    assert summary["parts"][SALMON_PARTS[0]]["accuracy"] == pytest.approx(2 / 3)
    assert summary["parts"][SALMON_PARTS[1]]["accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(JaxslmError, match="rir_consistency"):
        run_task(
            LastIdScorer(),
            SequenceBuilder(SPEECH_ONLY, None),
            TaskRequest("salmon", root, units, salmon_parts=("rir_consistency",)),
            progress=False,
        )
    for data, message in [
        (units, r"u\.jsonl: SALMon reads a folder, <root>/<part>/"),
        (tmp_path, "no SALMon part folder here; expected subfolders named after the parts"),
    ]:
        request = TaskRequest("salmon", data, units)
        with pytest.raises(JaxslmError, match=message):
            run_task(LastIdScorer(), SequenceBuilder(SPEECH_ONLY, None), request, progress=False)


def test_ties_count_half():
    scores = np.asarray([1.0, 0.5, 0.2, 0.2, -np.inf, -np.inf, 0.1, 0.3])
    np.testing.assert_array_equal(pairwise_accuracy(scores), [1.0, 0.5, 0.5, 0.0])


def test_sblimp_macro_average_over_phenomena(tmp_path):
    path = tmp_path / "sblimp.jsonl"
    rows = [("agreement", 5, 3), ("agreement", 5, 6), ("agreement", 2, 1), ("order", 4, 4)]
    lines = []
    for i, (phenomenon, pos, neg) in enumerate(rows):
        for kind, unit in (("good", pos), ("bad", neg)):
            lines.append(
                {"file_name": f"{i}+{kind}.wav", "units": [unit], "phenomenon": phenomenon}
            )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = run_task(
        LastIdScorer(),
        SequenceBuilder(SPEECH_ONLY, None),
        TaskRequest("sblimp", path),
        progress=False,
    ).summary
    assert summary["accuracy"] == pytest.approx(2.5 / 4)
    assert summary["parts"]["agreement"]["accuracy"] == pytest.approx(2 / 3)
    assert summary["macro_accuracy"] == pytest.approx((2 / 3 + 0.5) / 2)


def test_speech_only_sequences_are_bounded_by_s(tmp_path):
    builder = SequenceBuilder(SPEECH_ONLY, None)
    item = load_items_from_lines(tmp_path, [{"file_name": "0_a.wav", "units": [0, 7, 19]}])[0]
    assert builder.speech(item) == [1, 2, 9, 21, 1]


def load_items_from_lines(directory: Path, lines: list[dict]):
    path = directory / "items.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return load_items(path)


@pytest.mark.parametrize(
    "lines, message",
    [
        ('{"file_name": "0_a.wav", "units": [1]}\nnot json\n', r"bad\.jsonl:2: not valid JSON"),
        ('{"units": [1]}\n', r"bad\.jsonl:1: each line needs a non-empty string 'file_name'"),
        ('{"file_name": "0_a.wav", "units": [1, -2]}\n', "non-negative integers"),
        ('{"file_name": "0_a.wav"}\n', "neither 'units' nor 'text'"),
        ('{"file_name": "0_a.wav", "units": [1]}\n' * 2, r"repeats .*bad\.jsonl:1"),
    ],
)
def test_bad_jsonl_is_named(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(lines)
    with pytest.raises(JaxslmError, match=message):
        load_items(path)


def test_bad_folders_and_names_are_named(tmp_path):
    odd = tmp_path / "odd"
    _touch(odd, "0_a.txt", "0_b.txt", "1_a.txt")
    for name in ("0_a", "0_b", "1_a"):
        (odd / f"{name}.txt").write_text("some words")
    with pytest.raises(JaxslmError, match=r"1_a\.txt: the top level holds an odd number"):
        numbered_pairs(load_items(odd), "_", from_folder=True)
    unnumbered = tmp_path / "unnumbered"
    unnumbered.mkdir()
    (unnumbered / "first.txt").write_text("x")
    (unnumbered / "second.txt").write_text("y")
    with pytest.raises(
        JaxslmError, match=r"first\.txt: name 'first' does not start with an integer.*move files"
    ):
        numbered_pairs(load_items(unnumbered), "_", from_folder=True)
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "0_a.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(JaxslmError, match=r"0_a\.txt: cannot be decoded as UTF-8"):
        load_items(binary)
    audio = tmp_path / "audio"
    _touch(audio, "0_a.wav")
    with pytest.raises(JaxslmError, match=r"0_a\.wav: audio needs speech units.*--units"):
        load_items(audio)
    units = _units_file(tmp_path / "u.jsonl", {"other.wav": [1]})
    with pytest.raises(JaxslmError, match=r"0_a\.wav: no units in .*u\.jsonl"):
        load_items(audio, units)
    nameless = tmp_path / "nameless.jsonl"
    nameless.write_text('{"units": [1], "duration": [1]}\n')
    with pytest.raises(JaxslmError, match=r"nameless\.jsonl:1: each line needs .*'file_name'"):
        load_items(audio, nameless)
    with pytest.raises(JaxslmError, match="unknown task 'swugy'; known tasks: swuggy"):
        task_spec("swugy")


def test_units_outside_the_vocabulary_name_the_file(tmp_path):
    item = load_items_from_lines(tmp_path, [{"file_name": "0_a.wav", "units": [3, 20]}])[0]
    with pytest.raises(
        JaxslmError, match=r"items\.jsonl:1: 0_a holds unit 20, outside .*\[0, 20\)"
    ):
        SequenceBuilder(SPEECH_ONLY, None).speech(item)
    text = load_items_from_lines(tmp_path, [{"file_name": "0_a.txt", "text": "hello"}])[0]
    with pytest.raises(JaxslmError, match="speech-only model has no text vocabulary"):
        SequenceBuilder(SPEECH_ONLY, None).text(text)


@pytest.mark.parametrize("name", ["llama", "qwen"])
def test_interleaved_sequences_equal_slamkit_strings(name, request, tmp_path):
    """slamkit writes units as `<Un{i}>` strings with `<speech>`/`<text>` markers and tokenizes
    the whole string with the extended HF tokenizer (add_special_tokens=True)."""
    from transformers import AutoTokenizer

    from jaxslm.model_dir import TOKENIZER_DIR, load_tokenizer, read_metadata

    ckpt = request.getfixturevalue(f"{name}_ckpt")
    _, vocab, _ = read_metadata(ckpt)
    hf = AutoTokenizer.from_pretrained(ckpt / TOKENIZER_DIR)
    builder = SequenceBuilder(vocab, load_tokenizer(ckpt, vocab))
    prompt, correct = load_items_from_lines(
        tmp_path,
        [
            {"file_name": "0_mutual.wav", "units": [3, 4, 4, 7], "text": "the cat sat on the mat."},
            {"file_name": "0_correct.wav", "units": [7, 1, 2], "text": "the dog ran to the park."},
        ],
    )
    units = "".join(f"<Un{u}>" for u in prompt.units)
    ending = "".join(f"<Un{u}>" for u in correct.units)
    seam_merged = "".join(f"<Un{u}>" for u in [3, 4, 4, 7, 1, 2])
    expected = {
        "S->S": f"<speech>{seam_merged}",
        "S->T": f"<speech>{units}<text>{correct.text}",
        "T->S": f"<text>{prompt.text}<speech>{ending}",
        "T->T": f"<text>{prompt.text}{correct.text}",
    }
    for setting, text in expected.items():
        assert builder.cross_modal(prompt, correct, setting) == hf(text)["input_ids"], setting
    assert builder.speech(prompt) == hf(units)["input_ids"]
    assert builder.text(prompt) == hf(prompt.text)["input_ids"]
    assert (builder.speech(prompt)[0] == hf.bos_token_id) == (name == "llama")


def test_cross_modal_settings_are_parts(tmp_path):
    path = tmp_path / "cm.jsonl"
    lines = []
    for i, (good, bad) in enumerate([(9, 4), (6, 8)]):
        for role, unit in (("mutual", 3), ("correct", good), ("incorrect", bad)):
            lines.append({"file_name": f"{i}_{role}.wav", "units": [unit], "text": f"w{unit}."})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    vocab = SpeechVocab("interleaved", 100, 20, bos_id=None)

    class Tokenizer:
        bos_id = None

        def encode(self, text, add_special_tokens=True):
            return [ord(c) % 100 for c in text]

    result = run_task(
        LastIdScorer(),
        SequenceBuilder(vocab, Tokenizer()),
        TaskRequest("cm_storycloze", path, settings=("S->S", "T->S")),
        progress=False,
    )
    assert set(result.summary["parts"]) == {"S->S", "T->S"}
    assert result.summary["parts"]["S->S"] == {"accuracy": 0.5, "pairs": 2}
    assert [p["positive"] for p in result.pairs] == ["0_correct", "1_correct"] * 2


def test_cli_refuses_bad_requests_before_loading(tmp_path, capsys):
    from jaxslm import evaluate

    data = tmp_path / "swuggy.jsonl"
    data.write_text(json.dumps({"file_name": "0_a.wav", "units": [1]}) + "\n")
    missing_model = str(tmp_path / "no_model")
    cases = [
        (["--task", "swugy", "--data", str(data)], "unknown task 'swugy'"),
        (["--task", "swuggy"], "1 --task but 0 --data"),
        (["--task", "swuggy", "--data", str(tmp_path / "nope")], "does not exist"),
        (["--data-dir", str(tmp_path / "empty")], "no such folder"),
        (["--task", "swuggy", "--data", str(data), "--mesh", "2,2"], "three sizes"),
    ]
    for argv, message in cases:
        assert evaluate.main(["--checkpoint", missing_model, *argv]) == 2
        assert message in capsys.readouterr().err


def test_cli_writes_results_and_pair_scores(llama_ckpt, llama_lm, tmp_path):
    from jaxslm import evaluate

    rows = [
        ("0_word.wav", [1, 2, 3]),
        ("0_nonword.wav", [1, 2, 4]),
        ("1_word.wav", [5, 5, 6, 7, 8]),
        ("1_nonword.wav", [5, 5, 6, 7, 8]),
    ]
    data = _units_file(tmp_path / "swuggy.jsonl", dict(rows))
    out, pairs_out = tmp_path / "results.json", tmp_path / "pairs.jsonl"
    argv = [
        "--checkpoint",
        str(llama_ckpt),
        "--task",
        "swuggy",
        "--data",
        str(data),
        "--normalize",
        "sum",
        "--out",
        str(out),
        "--pairs-out",
        str(pairs_out),
        "--no-progress",
    ]
    assert evaluate.main(argv) == 0
    bos = [llama_lm.vocab.bos_id]
    expected = llama_lm.log_likelihood(
        [bos + llama_lm.vocab.units_to_ids(u).tolist() for _, u in rows], normalize="sum"
    )
    pairs = [json.loads(line) for line in pairs_out.read_text().splitlines()]
    got = [v for p in pairs for v in (p["ll_positive"], p["ll_negative"])]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    summary = json.loads(out.read_text())["tasks"]["swuggy"]
    assert summary["pairs"] == 2
    assert summary["accuracy"] == pytest.approx(((expected[0] > expected[1]) + 0.5) / 2)


class RestrictedScorer(LastIdScorer):
    """LastIdScorer under `vocab`'s modality restriction, not scoring target `masked`."""

    def __init__(self, vocab: SpeechVocab, masked: int = -1):
        self.vocab, self.masked = vocab, masked

    def restriction(self, modality):
        return allowed_tokens(self.vocab, modality, self.vocab.size), self.masked


class CharTokenizer:
    """Text ids: each character's code modulo 100 (`!` is 33, `d` is 0), after BOS 5."""

    bos_id = 5

    def encode(self, text, add_special_tokens=True):
        return [ord(c) % 100 for c in text]


def _cross_modal_file(path: Path) -> Path:
    roles = ("mutual", "correct", "incorrect")
    lines = [
        {"file_name": f"0_{r}.wav", "units": [i + 1], "text": f"w{i}."} for i, r in enumerate(roles)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_modality_refuses_tasks_of_the_other_modality_before_loading(tmp_path, capsys):
    """slamkit scores them -inf on both sides, a silent tie: refused, with the way to run."""
    from jaxslm import evaluate

    for name in ("swuggy", "sstorycloze_text", "cm_storycloze"):
        (tmp_path / f"{name}.jsonl").write_text("")
    base = ["--checkpoint", str(tmp_path / "no_model"), "--data-dir", str(tmp_path)]
    cases = [
        (
            ["--modality", "speech"],
            "--modality speech bans text tokens, which sstorycloze_text, cm_storycloze (settings "
            "S->T, T->S, T->T) score",
        ),
        (["--modality", "speech"], "and the rest with --modality speech --task swuggy"),
        (["--modality", "text", "--task", "swuggy"], "Run swuggy in a call without --modality"),
        (
            ["--modality", "text", "--task", "cm_storycloze", "--settings", "T->T", "S->T"],
            "cm_storycloze (settings S->T) score",
        ),
    ]
    for argv, message in cases:
        assert evaluate.main([*base, *argv]) == 2
        assert message in capsys.readouterr().err


def test_modality_refuses_a_banned_target_by_token(tmp_path):
    """Under jaxslm's speech restriction the `<speech>` marker after BOS is a banned target."""
    vocab = SpeechVocab("interleaved", 100, 20, bos_id=5)
    request = TaskRequest(
        "cm_storycloze", _cross_modal_file(tmp_path / "cm.jsonl"), settings=("S->S",)
    )
    builder = SequenceBuilder(vocab, CharTokenizer())
    with pytest.raises(
        JaxslmError,
        match=r"2 of 2 sequences \(first: pair 0_correct / 0_incorrect; parts S->S\) "
        "whose targets hold <speech>",
    ):
        run_task(RestrictedScorer(vocab), builder, request, modality="speech", progress=False)
    result = run_task(RestrictedScorer(vocab), builder, request, progress=False)
    assert result.summary["pairs"] == 1


def test_sequences_with_no_scored_target_are_refused(tmp_path):
    """--compat slamkit leaves out targets equal to id 0: a text of only such ids has no mean."""
    path = tmp_path / "sstorycloze_text.jsonl"
    texts = [
        ("0_correct.txt", "d"),
        ("0_incorrect.txt", "dd"),
        ("1_correct.txt", "ab"),
        ("1_incorrect.txt", "ba"),
    ]
    path.write_text("".join(json.dumps({"file_name": n, "text": t}) + "\n" for n, t in texts))
    vocab = SpeechVocab("interleaved", 100, 20, bos_id=5)
    builder = SequenceBuilder(vocab, CharTokenizer())
    request = TaskRequest("sstorycloze_text", path)
    with pytest.raises(
        JaxslmError,
        match=r"2 sequences \(first: pair 0_correct / 0_incorrect\) with no target to "
        r"score \(or only id 0",
    ):
        run_task(RestrictedScorer(vocab, masked=0), builder, request, progress=False)
    assert run_task(RestrictedScorer(vocab), builder, request, progress=False).summary["pairs"] == 2


def test_non_finite_scores_are_counted_and_written_as_null(
    llama_ckpt, tmp_path, monkeypatch, capsys
):
    """Whatever the model gives, --out and --pairs-out stay strict JSON and the task says how
    many pairs had a NaN or infinite log-likelihood."""
    from jaxslm import evaluate
    from jaxslm.evals.scorer import Scorer

    def nan_first(self, sequences, *args, **kwargs):
        return np.asarray([np.nan, -np.inf, -1.0, -2.0])

    monkeypatch.setattr(Scorer, "log_likelihood", nan_first)
    rows = [
        ("0_word.wav", [1, 2]),
        ("0_nonword.wav", [1, 3]),
        ("1_word.wav", [4]),
        ("1_nonword.wav", [5]),
    ]
    data = _units_file(tmp_path / "swuggy.jsonl", dict(rows))
    out, pairs_out = tmp_path / "results.json", tmp_path / "pairs.jsonl"
    argv = [
        "--checkpoint",
        str(llama_ckpt),
        "--task",
        "swuggy",
        "--data",
        str(data),
        "--modality",
        "speech",
    ]
    argv += ["--out", str(out), "--pairs-out", str(pairs_out), "--no-progress"]
    assert evaluate.main(argv) == 0
    assert "swuggy: the model gave 1 of 2 pairs a NaN or infinite" in capsys.readouterr().err

    def refuse(constant):
        raise AssertionError(f"{constant} is not strict JSON")

    pairs = [json.loads(line, parse_constant=refuse) for line in pairs_out.read_text().splitlines()]
    assert [(p["ll_positive"], p["ll_negative"]) for p in pairs] == [(None, None), (-1.0, -2.0)]
    summary = json.loads(out.read_text(), parse_constant=refuse)["tasks"]["swuggy"]
    assert summary["non_finite_pairs"] == 1


def test_strict_json_writes_null_for_non_finite_floats():
    from jaxslm.strict_json import strict_json

    value = {"a": float("-inf"), "b": [float("nan"), 1.5], "c": (2, "x")}
    assert strict_json(value) == '{"a": null, "b": [null, 1.5], "c": [2, "x"]}'
