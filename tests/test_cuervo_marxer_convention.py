"""`--convention cuervo-marxer` against a hand-computed reference: NLLs from the PyTorch forward
of their model (test_slm_scaling_import), questions laid out so that each outcome is known in
advance (right, wrong, a tie; a minimal pair whose voices disagree), and their summary rules
restated here (slm_scaling RESULTS.md and src/slm/evaluate.py)."""

import json

import numpy as np
import pytest
import torch
from test_slm_scaling_import import _native_dir, _state, reference_logits

from jaxslm import evaluate
from jaxslm.hf.slm_scaling import import_slm_scaling

EOS = 500
# phenomenon -> minimal pair -> outcome of each voice's question
DESIGN = {
    "anaphor_agreement": {"1": ("right", "right"), "2": ("right", "wrong"), "5": ("right",) * 2},
    "binding": {"3": ("wrong", "wrong"), "4": ("tie", "right")},
}
VOICES = ("Alice", "Bob")
SBLIMP_VALUE = {"right": 1.0, "wrong": 0.0, "tie": 0.5}  # ZeroSpeech half credit on ties


def reference_nll(state, units: list[int]) -> float:
    """Mean NLL of the units after their EOS, no terminal EOS (their _evaluation_pair)."""
    tokens = np.asarray([[EOS, *units]])
    log_probs = torch.log_softmax(torch.as_tensor(reference_logits(state, tokens)[0]), -1)
    return float(-np.mean([log_probs[t, tokens[0, t + 1]] for t in range(len(units))]))


def _candidates(state, rng, outcome: str) -> tuple[list[int], list[int]]:
    """(correct, incorrect) units whose reference NLLs give `outcome`."""
    first = rng.integers(0, 500, rng.integers(5, 12)).tolist()
    if outcome == "tie":
        return first, list(first)
    second = rng.integers(0, 500, rng.integers(5, 12)).tolist()
    low, high = sorted((first, second), key=lambda units: reference_nll(state, units))
    return (low, high) if outcome == "right" else (high, low)


@pytest.fixture(scope="module")
def cm_benchmark(tmp_path_factory):
    """The model, and the same questions in ZeroSpeech's layout (gold.csv) and slamkit's
    numbered layout (voices as subfolders)."""
    root = tmp_path_factory.mktemp("cm_convention")
    state = _state(seed=3)
    ckpt = import_slm_scaling(_native_dir(root / "native", state), root / "ckpt")
    rng = np.random.default_rng(7)
    gold = ["id,filename,voice,type,subtype,correct,transcription"]
    units_lines, numbered, expected_nll = [], [], {}
    (root / "zr").mkdir()
    for phenomenon, pairs in DESIGN.items():
        for pair, outcomes in pairs.items():
            for voice, outcome in zip(VOICES, outcomes, strict=True):
                correct, incorrect = _candidates(state, rng, outcome)
                for label, units in ((1, correct), (0, incorrect)):
                    name = f"f{pair}{voice}{label}"
                    gold.append(f"{pair},{name},{voice},{phenomenon},sub,{label},words")
                    (root / "zr" / f"{name}.wav").touch()
                    units_lines.append({"file_name": f"{name}.wav", "units": units})
                    role = "grammatical" if label else "ungrammatical"
                    numbered.append(
                        {
                            "file_name": f"{voice}/{pair}+{role}.wav",
                            "units": units,
                            "phenomenon": phenomenon,
                        }
                    )
                    expected_nll[name] = reference_nll(state, units)
    (root / "zr" / "gold.csv").write_text("\n".join(gold) + "\n")
    (root / "units.jsonl").write_text("".join(json.dumps(u) + "\n" for u in units_lines))
    (root / "numbered.jsonl").write_text("".join(json.dumps(u) + "\n" for u in numbered))
    return root, ckpt, expected_nll


def _expected_sblimp() -> dict:
    """Their summary restated over the designed outcomes."""
    values = {
        (ph, p): [SBLIMP_VALUE[o] for o in out] for ph, d in DESIGN.items() for p, out in d.items()
    }
    questions = [v for voices in values.values() for v in voices]
    per_phenomenon = {ph: np.mean([np.mean(values[ph, p]) for p in DESIGN[ph]]) for ph in DESIGN}
    return {
        "accuracy": np.mean(questions),
        "macro_accuracy": np.mean(list(per_phenomenon.values())),
        "voice_pair_accuracy": np.mean(questions),  # their summarize's keys
        "pair_accuracy": np.mean([np.mean(v) for v in values.values()]),
        "pairs": len(questions),
        "voice_pairs": len(values),
    }


def _run(ckpt, out, *argv) -> dict:
    code = evaluate.main(
        ["--checkpoint", str(ckpt), "--convention", "cuervo-marxer", "--out", str(out)]
        + ["--no-progress", *map(str, argv)]
    )
    assert code == 0
    return json.loads(out.read_text())["tasks"]


def test_sblimp_from_gold_csv(cm_benchmark, tmp_path):
    root, ckpt, expected_nll = cm_benchmark
    pairs_out = tmp_path / "pairs.jsonl"
    data = ["--task", "sblimp", "--data", root / "zr", "--units", root / "units.jsonl"]
    summary = _run(ckpt, tmp_path / "out.json", *data, "--pairs-out", pairs_out)["sblimp"]
    for key, value in _expected_sblimp().items():
        assert summary[key] == pytest.approx(value), key
    for line in pairs_out.read_text().splitlines():
        pair = json.loads(line)
        for role in ("positive", "negative"):
            assert pair[f"nll_{role}"] == pytest.approx(expected_nll[pair[role]], abs=1e-5)


def test_numbered_layout_groups_voices_by_subfolder(cm_benchmark, tmp_path):
    root, ckpt, _ = cm_benchmark
    summary = _run(
        ckpt, tmp_path / "out.json", "--task", "sblimp", "--data", root / "numbered.jsonl"
    )
    for key, value in _expected_sblimp().items():
        assert summary["sblimp"][key] == pytest.approx(value), key


def test_storycloze_ties_count_nothing(cm_benchmark, tmp_path):
    root, ckpt, _ = cm_benchmark
    state, rng, lines = _state(seed=3), np.random.default_rng(11), []
    for index, outcome in enumerate(("right", "wrong", "tie", "right")):
        for role, units in zip(
            ("correct", "incorrect"), _candidates(state, rng, outcome), strict=True
        ):
            lines.append({"file_name": f"{index}_{role}.wav", "units": units})
    data = tmp_path / "sstorycloze.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = _run(ckpt, tmp_path / "out.json", "--task", "sstorycloze", "--data", data)
    assert summary["sstorycloze"]["accuracy"] == pytest.approx(2 / 4)
    assert summary["sstorycloze"]["pairs"] == 4


@pytest.mark.parametrize(
    "argv",
    [
        ["--task", "salmon"],
        ["--task", "sblimp", "--normalize", "sum"],
        ["--task", "sblimp", "--compat", "slamkit"],
    ],
)
def test_refused_combinations(cm_benchmark, argv, capsys):
    root, ckpt, _ = cm_benchmark
    argv = [*argv, "--data", str(root / "numbered.jsonl"), "--convention", "cuervo-marxer"]
    assert evaluate.main(["--checkpoint", str(ckpt), *argv]) == 2
    assert "cuervo-marxer" in capsys.readouterr().err
