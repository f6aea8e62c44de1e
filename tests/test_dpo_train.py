"""`python -m jaxslm.train` with `objective: dpo` on the toy preference set: a resumed run after
SIGKILL logs the same losses as an uninterrupted one, and an 8-device mesh with precomputed
reference log-probabilities the same as one device with a frozen reference."""

import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from processes import signal_once_saved
from test_train import DEFAULTS, REPO, TINY, assert_close, losses, single_device_env

from jaxslm.config import load_config
from jaxslm.data.preference_store import build_synthetic_preferences
from jaxslm.errors import JaxslmError
from jaxslm.training.metrics_log import read_metrics
from jaxslm.training.reference_cache import load_cached

STEPS = 12
# test_train's tiny shape, constant schedule and per-step logging, on the toy preference set
SHARED = [o for o in TINY if o.startswith(("model.", "schedule.", "logging."))]
TINY_DPO = [
    *SHARED,
    "objective=dpo",
    "vocab.mode=speech-only",
    "data.seq_len=128",
    "data.batch_size=4",
    "dpo.pairs_per_step=8",
    "dpo.max_prompt_length=32",
    "dpo.max_completion_length=16",
    "dpo.beta=0.5",
    "optimizer.lr=3e-3",
    "checkpoint.every_steps=4",
    "eval.every_steps=6",
    "eval.batches=2",
    f"budget.max_steps={STEPS}",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_synthetic_preferences(tmp_path_factory.mktemp("dpo_corpus") / "toy")


def command(corpus, run_dir, *extra):
    overrides = [*TINY_DPO, f"data.corpus={corpus}", f"run_dir={run_dir}", *extra]
    return [sys.executable, "-m", "jaxslm.train", "--config", str(DEFAULTS), *overrides]


def train_here(corpus, run_dir, *extra):
    return train_here_with(TINY_DPO, corpus, run_dir, *extra)


def train_here_with(base, corpus, run_dir, *extra):
    """Train in this process from the overrides `base` + the corpus, run_dir and `extra`."""
    from jaxslm.training.trainer import train

    overrides = [*base, f"data.corpus={corpus}", f"run_dir={run_dir}", *extra]
    return train(load_config(None, overrides))


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The single-device run: its directory and its records."""
    run_dir = tmp_path_factory.mktemp("dpo_reference") / "run"
    subprocess.run(command(corpus, run_dir), check=True, env=single_device_env(), cwd=REPO)
    return run_dir, read_metrics(run_dir)


def test_run_logs_dpo_metrics(reference):
    records = reference[1]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert steps[0]["loss"] == pytest.approx(np.log(2), abs=1e-6)  # policy = reference
    for record in steps:
        assert record["pairs"] == 8 and record["loss_tokens"] > 0
        margin = record["rewards_chosen"] - record["rewards_rejected"]
        assert record["reward_margin"] == pytest.approx(margin, abs=1e-5)
    held_out = [r for r in records if "eval_reward_accuracy" in r]
    assert [r["step"] for r in held_out] == [6, 12]


def test_eight_devices_and_precomputed_reference_match_one(corpus, reference, tmp_path):
    """A 2 x 2 x 2 mesh with reference log-probabilities computed once before training logs
    the losses of one device scoring a frozen reference at every step."""
    run_dir = tmp_path / "run"
    mesh = ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]
    train_here(corpus, run_dir, *mesh, "dpo.reference=precomputed", "eval.every_steps=0")
    assert (run_dir / "reference_logps" / "train.npz").is_file()
    assert_close(losses(run_dir), losses(reference[0]), rtol=2e-5)


def test_sigkill_then_rerun_resumes_bitwise(corpus, reference, tmp_path):
    run_dir = tmp_path / "run"
    long_run = command(corpus, run_dir, "budget.max_steps=100000")
    signal_once_saved(long_run, run_dir / "checkpoints" / "8", signal.SIGKILL, single_device_env())
    subprocess.run(command(corpus, run_dir), check=True, env=single_device_env(), cwd=REPO)
    assert losses(run_dir) == losses(reference[0])  # bitwise, before and after the kill


def test_objective_must_match_the_corpus(corpus, tmp_path):
    from jaxslm.training.setup import plan_run

    overrides = command(corpus, tmp_path / "run", "objective=lm")[5:]
    with pytest.raises(JaxslmError, match="holds preference pairs, which objective=lm"):
        plan_run(load_config(None, overrides))


def test_a_missing_held_out_split_is_named(corpus, tmp_path):
    with pytest.raises(JaxslmError, match="no 'dev' split of preference pairs.*eval.split"):
        train_here(corpus, tmp_path / "run", "eval.split=dev", "mesh.data=4", "mesh.tensor=2")


def test_run_starts_from_a_pretrained_run(corpus, reference, tmp_path):
    """model.init is a jaxslm run: the policy starts from it and the frozen reference is it, so
    the first step's loss is log 2 exactly as at step 1 of a fresh run (a seeded reference
    would give another value), and its log-probabilities are the trained run's, not those of
    the fresh run's first step on the same pairs."""
    shape = [o for o in TINY_DPO if not o.startswith("model.")]
    run_dir = tmp_path / "run"
    extra = [f"model.init={reference[0]}", "budget.max_steps=2", "eval.every_steps=0"]
    extra += ["mesh.data=4", "mesh.tensor=2"]
    train_here_with(shape, corpus, run_dir, *extra)
    first = read_metrics(run_dir)[0]
    assert first["step"] == 1 and first["loss"] == pytest.approx(np.log(2), abs=1e-6)
    fresh = next(r for r in reference[1] if r["step"] == 1)
    assert first["pairs"] == fresh["pairs"]  # the same first batch
    assert first["logps_chosen"] != pytest.approx(fresh["logps_chosen"], rel=1e-4)


def test_precomputed_reference_is_recomputed_when_its_inputs_change(corpus, tmp_path, capsys):
    """RUN_DIR/reference_logps/ is reused only for the same reference, pairs and settings: a
    run dir whose run stopped before its first checkpoint (so no resume check refuses the new
    config), rerun with another dpo.max_completion_length, recomputes the file, equal to a
    fresh run's; an unchanged config reuses it; a half-written file is never used."""
    quick = ["dpo.reference=precomputed", "eval.every_steps=0", "budget.max_steps=1"]
    quick += ["mesh.data=4", "mesh.tensor=2"]
    shorter = "dpo.max_completion_length=8"
    run_dir, fresh_dir = tmp_path / "run", tmp_path / "fresh"
    cached = run_dir / "reference_logps" / "train.npz"

    def rerun(*extra):
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # stopped before a checkpoint
        capsys.readouterr()
        train_here(corpus, run_dir, *quick, *extra)
        return capsys.readouterr().out

    def logps(path):
        with np.load(path) as saved:
            return saved["logps"]

    train_here(corpus, run_dir, *quick)
    longer = logps(cached)
    train_here(corpus, fresh_dir, *quick, shorter)
    expected = logps(fresh_dir / "reference_logps" / "train.npz")
    assert not np.array_equal(expected, longer)

    out = rerun(shorter)
    assert "was computed for other inputs" in out and "dpo.max_completion_length: 16 -> 8" in out
    np.testing.assert_array_equal(logps(cached), expected)

    before = cached.stat()
    assert "recomputing" not in rerun(shorter)
    assert (cached.stat().st_ino, cached.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # a config the resume check refuses is refused before any reference pass touches the file
    with pytest.raises(JaxslmError, match="dpo.max_completion_length: 8 there, 12 here"):
        train_here(corpus, run_dir, *quick, "dpo.max_completion_length=12")
    assert (cached.stat().st_ino, cached.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert "model.rope_theta: None -> 50.0" in rerun(shorter, "model.rope_theta=50.0")

    with np.load(cached) as saved:
        stored = json.loads(str(saved["fingerprint"]))
    half = tmp_path / "half.npz"
    half.write_bytes(cached.read_bytes()[: before.st_size // 2])
    assert load_cached(half, stored) is None
    assert "cannot be read" in capsys.readouterr().out


def test_benchmarks_during_a_dpo_run_equal_scoring_its_checkpoint(corpus, tmp_path, capsys):
    """eval.tasks in a DPO run scores the live policy; the accuracies logged at the last step
    equal `python -m jaxslm.evaluate` on the finished run. A preference corpus has no eval/
    folder, so without eval.tasks_dir the run is refused with the fix."""
    from jaxslm import evaluate
    from jaxslm.data.synthetic import SyntheticConfig, SyntheticLanguage
    from jaxslm.data.synthetic_eval import write_eval_sets
    from jaxslm.errors import JaxslmError

    tasks_dir = tmp_path / "eval"
    write_eval_sets(SyntheticLanguage(SyntheticConfig()), tasks_dir, num_pairs=24)
    run_dir = tmp_path / "run"
    mesh = ["mesh.data=4", "mesh.tensor=2"]
    with pytest.raises(JaxslmError, match="set eval.tasks_dir"):
        train_here(corpus, tmp_path / "refused", *mesh, "eval.tasks=[swuggy]")
    tasks = ["eval.tasks=[swuggy,sblimp]", f"eval.tasks_dir={tasks_dir}"]
    train_here(corpus, run_dir, *mesh, *tasks, "eval.tasks_every_steps=2", "budget.max_steps=4")
    scored = [r for r in read_metrics(run_dir) if "swuggy_accuracy" in r]
    assert [r["step"] for r in scored] == [2, 4]
    assert "benchmarks at step 4" in capsys.readouterr().out
    out = tmp_path / "results.json"
    argv = ["--checkpoint", str(run_dir), "--data-dir", str(tasks_dir), "--no-progress"]
    argv += ["--out", str(out), "--task", "swuggy", "--task", "sblimp"]
    assert evaluate.main(argv) == 0
    results = json.loads(out.read_text())["tasks"]
    for task in ("swuggy", "sblimp"):
        assert results[task]["accuracy"] == pytest.approx(scored[-1][f"{task}_accuracy"])
        assert results[task]["pairs"] == 24


@pytest.mark.parametrize("reference, factor", [("frozen", 4 / 3), ("precomputed", 1.0)])
def test_mfu_counts_the_frozen_references_forward(reference, factor):
    """MaxText's DPO convention: a frozen reference's forward pass is a third of a step."""
    from pathlib import Path

    from jaxslm.config import load_config
    from jaxslm.models.presets import preset_model_config
    from jaxslm.scaling.flops import train_flops
    from jaxslm.training.step_report import Throughput

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs/tiny_dpo.yaml", [f"dpo.reference={reference}"])
    model = preset_model_config("tiny", vocab_size=600)
    throughput = Throughput.of_run(cfg, model, 0)
    plain = train_flops(model, cfg.data.batch_size, cfg.data.seq_len)
    assert throughput.flops_per_step == pytest.approx(factor * plain)


def test_pairs_without_the_modality_are_counted_aloud(tmp_path, capsys):
    """A pair whose chosen side has text but no units cannot train a speech DPO run: it is
    left out, and the run says how many were."""
    from jaxslm.data.build import main as build_main

    def side(units):
        return {"units": units, "duration": [1] * len(units)}

    lines = [
        {"prompt": side([1, 2, 3, i % 7]), "chosen": side([4, 5]), "rejected": side([6, i % 5])}
        for i in range(40)
    ]
    lines += [{**line, "chosen": {"text": "only words"}} for line in lines[:3]]
    source = tmp_path / "pairs.jsonl"
    source.write_text(
        "".join(json.dumps({**line, "id": f"p{i}"}) + "\n" for i, line in enumerate(lines))
    )
    corpus = tmp_path / "corpus"
    argv = ["--preference", str(source), "--num-units", "20", "--validation-fraction", "0"]
    assert build_main([*argv, "--out", str(corpus)]) == 0
    capsys.readouterr()
    train_here(
        corpus,
        tmp_path / "run",
        "budget.max_steps=1",
        "eval.every_steps=0",
        "mesh.data=4",
        "mesh.tensor=2",
    )
    assert (
        "3 of the 43 train pairs lack speech on some side (dpo.modality): left out"
        in capsys.readouterr().out
    )
