"""Training survives faults: SIGKILL at random real points (while an async or a sync
checkpoint is written, just after one commits, between steps, around the held-out evaluation),
a damaged newest checkpoint, a half-written metrics line. After each fault the run's
metrics.jsonl holds every step up to its newest checkpoint, none twice, and the resumed run's
losses and records equal an uninterrupted run's (bitwise: one CPU device, float32).

Kills are chained to save processes: a run is killed, its rerun (which resumes) is killed at a
later point, and so on; the test watches the run directory to find each point.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_train import DEFAULTS, REPO, TINY, single_device_env

import jaxslm
from jaxslm.data.synthetic import SyntheticConfig
from jaxslm.data.synthetic_corpus import build_synthetic
from jaxslm.training.metrics_log import read_metrics

STEPS = 12
EVERY = 3  # checkpoint and held-out evaluation
RUN = [
    *TINY,
    "data.batch_size=4",
    f"checkpoint.every_steps={EVERY}",
    f"eval.every_steps={EVERY}",
    "eval.batches=2",
    "logging.tensorboard=false",
    f"budget.max_steps={STEPS}",
]
TIMING = ("tokens_per_second", "mfu")  # differ between runs
KILLS_PER_RUN = 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    config = SyntheticConfig(num_utterances=300, num_text_documents=200, num_validation=20)
    return build_synthetic(tmp_path_factory.mktemp("fault_corpus") / "toy", config)


def command(corpus, run_dir, *extra):
    overrides = [*RUN, f"data.corpus={corpus}", f"run_dir={run_dir}", *extra]
    return [sys.executable, "-m", "jaxslm.train", "--config", str(DEFAULTS), *overrides]


def train(corpus, run_dir, *extra) -> str:
    """Run (or resume) to the end; its output."""
    result = subprocess.run(
        command(corpus, run_dir, *extra),
        env=single_device_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def records(run_dir) -> list[dict]:
    """metrics.jsonl without the timing fields."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a half-written last line is reported and left out
        logged = read_metrics(run_dir)
    return [{k: v for k, v in r.items() if k not in TIMING} for r in logged]


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The uninterrupted run: its directory and its records."""
    run_dir = tmp_path_factory.mktemp("fault_reference") / "run"
    train(corpus, run_dir)
    logged = records(run_dir)
    assert [r["step"] for r in logged] == list(range(1, STEPS + 1))
    assert all("eval_loss" in r for r in logged if r["step"] % EVERY == 0)
    return run_dir, logged


def committed_steps(run_dir) -> list[int]:
    directory = run_dir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def progress(run_dir) -> int:
    """The furthest step the run directory shows: checkpoints (also unfinished ones) and
    metrics records. A point to kill at must lie beyond it, or stale files would trigger it."""
    if not (run_dir / "checkpoints").is_dir():
        return 0
    names = [p.name.split(".")[0] for p in (run_dir / "checkpoints").iterdir()]
    saves = [int(name) for name in names if name.isdigit()]
    logged = [r["step"] for r in records(run_dir)]
    return max([0, *saves, *logged])


def pick_point(rng: random.Random, after: int) -> tuple[str, int] | None:
    """A random kill point beyond step `after`: ("save", N) while checkpoint N is written,
    ("commit", N) once it is committed, ("record", K) once step K is logged (between steps;
    before the held-out evaluation of step K + 1 when it is a multiple of EVERY)."""
    near = range(after + 1, min(after + 2 * EVERY, STEPS) + 1)  # a few kills per run
    saves = [n for n in near if n % EVERY == 0]
    points = [("save", n) for n in saves] + [("commit", n) for n in saves if n < STEPS]
    points += [("record", k) for k in near]
    return rng.choice(points) if points else None


def reached(run_dir: Path, point: tuple[str, int]) -> bool:
    kind, step = point
    checkpoints = run_dir / "checkpoints"
    if kind == "save":
        return any(checkpoints.glob(f"{step}.orbax-checkpoint-tmp*"))
    if kind == "commit":
        return (checkpoints / str(step)).is_dir()
    metrics = run_dir / "metrics.jsonl"
    return metrics.is_file() and f'{{"step": {step},' in metrics.read_text()


def kill_at(corpus, run_dir, point, *extra) -> str:
    """Start the run, SIGKILL it as soon as `point` is reached; its output."""
    process = subprocess.Popen(
        command(corpus, run_dir, *extra),
        env=single_device_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and not reached(run_dir, point):
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == -signal.SIGKILL, f"{point} never came:\n{output}"
    return output


def assert_nothing_lost(run_dir, reference_records, point):
    """Records are steps 1..m in order, equal to the reference's, with m >= the newest
    committed checkpoint."""
    logged = records(run_dir)
    steps = [r["step"] for r in logged]
    assert steps == list(range(1, len(steps) + 1)), (point, steps)
    newest = max(committed_steps(run_dir), default=0)
    assert len(steps) >= newest, f"killed at {point}: checkpoint {newest} but records {steps}"
    assert logged == reference_records[: len(logged)], point


@pytest.mark.parametrize(
    "seed, async_save, first",
    [
        (0, True, None),
        (1, False, ("commit", EVERY)),  # a record used to follow its sync checkpoint
        (2, True, None),
        (3, False, None),
    ],
)
def test_sigkill_anywhere_then_resume_loses_nothing(
    corpus, reference, tmp_path, seed, async_save, first
):
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    save_mode = f"checkpoint.async_save={str(async_save).lower()}"
    point = first or pick_point(rng, 0)
    for _ in range(KILLS_PER_RUN):
        kill_at(corpus, run_dir, point, save_mode)
        assert_nothing_lost(run_dir, reference[1], point)
        point = pick_point(rng, progress(run_dir))
        if point is None:
            break
    output = train(corpus, run_dir, save_mode)
    assert "taking over its run" in output  # the lock the last SIGKILL left behind
    assert records(run_dir) == reference[1]


def copy_of(reference, tmp_path, name="run") -> Path:
    run_dir = tmp_path / name
    shutil.copytree(reference[0], run_dir)
    return run_dir


def truncate_largest_array_file(step_dir: Path) -> None:
    files = [p for p in (step_dir / "params").rglob("*") if p.is_file()]
    os.truncate(max(files, key=lambda p: p.stat().st_size), 100)


# Orbax abandons the other reads of a failed restore; under pytest's hook their coroutines'
# clean-up is reported (a command prints nothing).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damaged_array_file_falls_back_everywhere(corpus, reference, tmp_path):
    """Training, jaxslm.load, evaluate and export-hf use checkpoint 9 when 12 is damaged."""
    from jaxslm import evaluate
    from jaxslm.hf.exporter import export_hf

    run_dir = copy_of(reference, tmp_path)
    truncate_largest_array_file(run_dir / "checkpoints" / str(STEPS))
    older = copy_of(reference, tmp_path, "older")  # the oracle: the run as of step 9
    shutil.rmtree(older / "checkpoints" / str(STEPS))
    damaged = rf"checkpoints/{STEPS}/params is damaged: .*Error reading"

    tokens = np.arange(24, dtype=np.int32).reshape(2, 12)
    with pytest.warns(UserWarning, match=damaged):
        logits = jaxslm.load(run_dir).logits(tokens)
    np.testing.assert_array_equal(logits, jaxslm.load(older).logits(tokens))

    with pytest.warns(UserWarning, match=damaged):
        export_hf(run_dir, tmp_path / "hf")
    export_hf(older, tmp_path / "hf_older")
    exported = (tmp_path / "hf" / "model.safetensors").read_bytes()
    assert exported == (tmp_path / "hf_older" / "model.safetensors").read_bytes()

    args = ["--data-dir", str(corpus / "eval"), "--task", "swuggy", "--no-progress", "--out"]
    with pytest.warns(UserWarning, match=damaged):
        assert evaluate.main(["--checkpoint", str(run_dir), *args, str(tmp_path / "a.json")]) == 0
    assert evaluate.main(["--checkpoint", str(older), *args, str(tmp_path / "b.json")]) == 0
    accuracy = [json.loads((tmp_path / f).read_text())["tasks"] for f in ("a.json", "b.json")]
    assert accuracy[0] == accuracy[1]

    output = train(corpus, run_dir)
    assert f"checkpoints/{STEPS} is damaged" in output
    assert (run_dir / "damaged_checkpoints" / str(STEPS)).is_dir()
    assert STEPS in committed_steps(run_dir)  # saved again by the resumed run
    assert records(run_dir) == reference[1]


@pytest.mark.parametrize(
    "damaged_file, size", [("params/_METADATA", 10), ("data/process_0-of-1.json", 0)]
)
def test_damaged_metadata_is_named_and_skipped(corpus, reference, tmp_path, damaged_file, size):
    run_dir = copy_of(reference, tmp_path)
    os.truncate(run_dir / "checkpoints" / str(STEPS) / damaged_file, size)
    output = train(corpus, run_dir)
    assert f"checkpoints/{STEPS} is damaged: {damaged_file}" in output
    assert "processes" not in output
    assert records(run_dir) == reference[1]


def test_half_written_metrics_line_is_dropped(corpus, reference, tmp_path):
    """A run killed while writing record 11, before checkpoint 12 existed."""
    run_dir = copy_of(reference, tmp_path)
    shutil.rmtree(run_dir / "checkpoints" / str(STEPS))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "metrics.jsonl").write_text("".join(lines[:10]) + lines[10][:40])
    output = train(corpus, run_dir)
    assert "dropped a half-written last line" in output
    assert records(run_dir) == reference[1]


def test_broken_metrics_line_before_the_last_is_an_error(tmp_path):
    from jaxslm.errors import JaxslmError

    lines = ['{"step": 1, "loss": 2.0}', '{"step": 2, "lo', '{"step": 3, "loss": 1.0}']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(JaxslmError, match="metrics.jsonl: line 2 is not a metrics record"):
        read_metrics(tmp_path)
