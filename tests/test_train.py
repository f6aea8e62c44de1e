"""Training end to end: the loss falls and the run dir loads as a model; 8-device sharding,
two processes and a restore onto 8 devices agree with one device; two processes stop at the
same step when a SIGTERM reaches one; a SIGKILLed run resumes bitwise; bad configs fail before
any work.

One 20-step run on a single device (a subprocess) is the reference for the others.
"""

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from processes import signal_once_saved

from jaxslm.config import load_config
from jaxslm.data.synthetic import SyntheticConfig
from jaxslm.data.synthetic_corpus import build_synthetic
from jaxslm.training.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = Path(__file__).with_name("run.yaml")  # the config defaults, as load_config(None)
STEPS = 20
TINY = [
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "model.head_dim=8",
    "data.seq_len=64",
    "data.batch_size=8",
    "optimizer.lr=3e-3",
    "schedule.warmup_steps=0",
    "schedule.warmup_fraction=0",
    "schedule.decay=constant",
    "checkpoint.every_steps=5",
    "eval.every_steps=0",
    "logging.every_steps=1",
    "logging.progress_bar=false",
    f"budget.max_steps={STEPS}",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    config = SyntheticConfig(num_utterances=300, num_text_documents=200, num_validation=20)
    return build_synthetic(tmp_path_factory.mktemp("train_corpus") / "toy", config)


def overrides(corpus, run_dir, *extra):
    return [*TINY, f"data.corpus={corpus}", f"run_dir={run_dir}", *extra]


def command(corpus, run_dir, *extra):
    return [
        sys.executable,
        "-m",
        "jaxslm.train",
        "--config",
        str(DEFAULTS),
        *overrides(corpus, run_dir, *extra),
    ]


def single_device_env():
    """A subprocess environment with one CPU device (conftest gives this process eight)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "").strip()
    )
    return env


def losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if "loss" in r}


def train_here(corpus, run_dir, *extra):
    from jaxslm.training.trainer import train

    return train(load_config(None, overrides(corpus, run_dir, *extra)))


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The 20-step single-device run: its directory and its losses by step."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run(command(corpus, run_dir), check=True, env=single_device_env(), cwd=REPO)
    return run_dir, losses(run_dir)


def assert_close(got, want, rtol):
    assert sorted(got) == sorted(want)
    steps = sorted(want)
    np.testing.assert_allclose([got[s] for s in steps], [want[s] for s in steps], rtol=rtol)


def test_run_learns_logs_and_loads(reference):
    import jaxslm

    run_dir, by_step = reference
    assert sorted(by_step) == list(range(1, STEPS + 1))
    assert by_step[STEPS] < by_step[1] - 1.0
    record = read_metrics(run_dir)[-1]
    assert record["tokens"] == STEPS * 8 * 64
    assert {"loss_text", "loss_speech", "loss_marker", "grad_norm", "lr"} <= set(record)
    saved = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir())
    assert saved == [10, 15, 20]  # keep: 3
    model = jaxslm.load(run_dir)
    tokens = np.arange(12, dtype=np.int32).reshape(2, 6)
    assert model.logits(tokens).shape == (2, 6, model.vocab.size)
    assert load_config(run_dir / "config.yaml").model.hidden_size == 32
    assert list(run_dir.glob("events.out.tfevents.*"))


def assert_logged_stream_shares(run_dir, processes: int = 1):
    """Each logged record (here every step) has the shares of the step's targets by stream,
    recounted here from the same batches of every process."""
    from jaxslm.data.pipeline import make_pipeline
    from jaxslm.training.setup import pipeline_config, plan_run

    cfg = load_config(run_dir / "config.yaml")
    plan, config = plan_run(cfg), pipeline_config(cfg, "train", None)
    shards = [
        make_pipeline(plan.corpus, plan.tokenizer, plan.vocab, config, index, processes)
        for index in range(processes)
    ]
    records = read_metrics(run_dir)
    for record, *batches in zip(records, *shards, strict=False):
        counts = sum(np.bincount(b["stream"][b["loss_mask"] > 0], minlength=3) for b in batches)
        logged = [record[f"tokens_{name}"] for name in ("text", "interleaved", "speech")]
        np.testing.assert_allclose(logged, counts / counts.sum(), rtol=1e-12)
    return records


def test_run_logs_the_realised_stream_shares(reference):
    assert len(assert_logged_stream_shares(reference[0])) == STEPS


def test_run_exports_to_transformers(reference, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    import jaxslm
    from jaxslm.hf.exporter import export_hf

    export_hf(reference[0], tmp_path / "hf")
    hf_model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    tokens = (np.arange(24, dtype=np.int32).reshape(2, 12) * 37) % hf_model.config.vocab_size
    with torch.no_grad():
        theirs = hf_model(torch.tensor(tokens).long()).logits.numpy()
    lm = jaxslm.load(reference[0])
    np.testing.assert_allclose(lm.logits(tokens), theirs, atol=2e-5)
    _assert_tokenizer_reads_the_export(lm, reference[0], tmp_path / "hf")


def _assert_tokenizer_reads_the_export(lm, run_dir, export):
    """AutoTokenizer reads the export's SentencePiece model with the units and markers at
    their jaxslm ids, and encodes single-spaced text of its alphabet as jaxslm does."""
    from transformers import AutoTokenizer

    from jaxslm.model_dir import load_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(export)
    vocab = lm.vocab
    assert len(tokenizer) == vocab.size
    names = vocab.added_tokens()
    assert tokenizer.convert_tokens_to_ids(names) == list(range(vocab.unit_offset, vocab.size))
    rng = np.random.default_rng(0)
    ours = load_tokenizer(run_dir, vocab)
    for _ in range(50):
        text = " ".join(ours.decode(rng.integers(3, vocab.unit_offset, 12).tolist()).split())
        assert tokenizer(text)["input_ids"] == ours.encode(text), text


def test_eight_devices_match_one(corpus, reference, tmp_path):
    train_here(corpus, tmp_path / "run", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")
    assert_close(losses(tmp_path / "run"), reference[1], rtol=1e-5)


def test_one_device_checkpoint_restores_onto_eight(corpus, reference, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    for step in (15, 20):
        shutil.rmtree(run_dir / "checkpoints" / str(step))
    summary = train_here(corpus, run_dir, "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")
    assert summary["start_step"] == 10
    resumed = {s: v for s, v in reference[1].items() if s > 10}
    assert_close(summary["losses"], resumed, rtol=1e-5)


def interrupt_after_checkpoint(corpus, run_dir, step, signum):
    """Start a run with a long budget, send `signum` once checkpoint `step` exists; its output.

    The schedule is constant, so the long budget does not change the updates."""
    checkpoint = run_dir / "checkpoints" / str(step)
    long_run = command(corpus, run_dir, "budget.max_steps=100000")
    return signal_once_saved(long_run, checkpoint, signum, single_device_env())


def test_sigterm_saves_before_exit(corpus, tmp_path):
    returncode, output = interrupt_after_checkpoint(corpus, tmp_path / "run", 5, signal.SIGTERM)
    assert returncode == 0, output
    stopped = int(output.split("stopped at step ")[1].split(":")[0])
    assert "SIGTERM" in output
    assert (tmp_path / "run" / "checkpoints" / str(stopped)).is_dir()


def test_wall_clock_budget_saves_and_stops(corpus, tmp_path):
    summary = train_here(
        corpus, tmp_path / "run", "budget.max_steps=100000", "budget.max_seconds=1"
    )
    assert "wall-clock" in summary["stopped"]
    assert (tmp_path / "run" / "checkpoints" / str(summary["end_step"])).is_dir()


def test_processes_stop_on_any_sigterm_and_on_process_0s_clock(monkeypatch):
    """With several processes the stop decision is the exchanged table of the previous step
    (distributed.FlagExchange): a SIGTERM to any process stops all, the wall clock is process
    0's, and a request not yet exchanged stops nothing."""
    from jaxslm.training import hooks

    tables = iter([None, [[0, 0], [0, 1]], [[0, 1], [0, 0]], [[0, 0], [1, 1]]])
    sent = []

    class Exchange:  # what FlagExchange returns: the table the previous call started
        def exchange(self, flags):
            sent.append(list(flags))
            table = next(tables)
            return None if table is None else np.asarray(table, np.int32)

    monkeypatch.setattr(hooks.jax, "process_count", lambda: 2)
    monkeypatch.setattr(hooks, "FlagExchange", Exchange)
    stop = hooks.StopRequests(max_seconds=0)
    try:
        stop.terminated = True
        assert stop.reason(1, None) is None  # not exchanged yet
        assert stop.reason(2, None) is None  # only process 1's clock is past the deadline
        assert "wall-clock" in stop.reason(3, None)
        assert "SIGTERM" in stop.reason(4, None)
    finally:
        stop.restore()
    assert sent == [[True, True]] * 4


def test_sigkill_then_rerun_resumes_bitwise(corpus, reference, tmp_path):
    run_dir = tmp_path / "run"
    interrupt_after_checkpoint(corpus, run_dir, 10, signal.SIGKILL)
    subprocess.run(command(corpus, run_dir), check=True, env=single_device_env(), cwd=REPO)
    resumed = losses(run_dir)
    assert resumed == reference[1]  # bitwise: every logged step, before and after the kill


def start_two_processes(corpus, run_dir, *extra) -> list[subprocess.Popen]:
    """Start the training command as two jax.distributed processes of one CPU device each."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    distributed = [
        "mesh.data=2",
        f"mesh.coordinator_address=127.0.0.1:{port}",
        "mesh.num_processes=2",
        *extra,
    ]
    return [
        subprocess.Popen(
            command(corpus, run_dir, *distributed, f"mesh.process_id={i}"),
            env=single_device_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]


def train_two_processes(corpus, run_dir, *extra):
    """Run the training command as two processes to the end."""
    processes = start_two_processes(corpus, run_dir, *extra)
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs


def test_two_processes_match_one(corpus, reference, tmp_path):
    train_two_processes(corpus, tmp_path / "run", "data.shard_by=rows", "budget.max_steps=10")
    first_ten = {s: v for s, v in reference[1].items() if s <= 10}
    assert_close(losses(tmp_path / "run"), first_ten, rtol=1e-5)


def test_two_processes_stop_at_the_same_step_when_one_is_signalled(corpus, tmp_path):
    """Each process reads its own records (the logged stream shares are those of both
    processes' batches). A SIGTERM that reaches process 1 alone stops both processes after the
    same step (they agree at every step), with that step's checkpoint, holding both data
    iterators, and every step logged once; before, process 1 left while process 0 waited in
    the next step's collective forever."""
    run_dir = tmp_path / "run"
    processes = start_two_processes(corpus, run_dir, "budget.max_steps=100000")
    checkpoint, deadline = run_dir / "checkpoints" / "5", time.monotonic() + 120
    while not checkpoint.is_dir() and time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            break
        time.sleep(0.02)
    processes[1].send_signal(signal.SIGTERM)
    try:
        outputs = [p.communicate(timeout=60)[0] for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
        outputs = [p.communicate()[0] for p in processes]
        pytest.fail(f"a process did not stop after the SIGTERM:\n{outputs[0]}\n{outputs[1]}")
    assert [p.returncode for p in processes] == [0, 0], outputs
    stopped = [int(out.split("stopped at step ")[1].split(":")[0]) for out in outputs]
    assert stopped[0] == stopped[1] >= 5 and all("SIGTERM" in out for out in outputs), outputs
    logged = [r["step"] for r in read_metrics(run_dir) if "loss" in r]
    assert logged == list(range(1, stopped[0] + 1))
    assert len(assert_logged_stream_shares(run_dir, processes=2)) == stopped[0]
    by_step = losses(run_dir)
    assert by_step[stopped[0]] < by_step[1]
    saved = checkpoint.parent / str(stopped[0]) / "data"
    data_files = sorted(p.name for p in saved.glob("*.json"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]


def test_two_processes_refuse_batch_shards_that_span_them(corpus, tmp_path):
    """With data.shard_by=records each process feeds its own rows, so mesh data x fsdp must
    split over the processes: one batch shard over two processes stops both before any work,
    naming the fix."""
    processes = start_two_processes(corpus, tmp_path / "run", "mesh.data=1", "mesh.tensor=2")
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [2, 2], outputs
    for output in outputs:
        assert "mesh data=1 x fsdp=1 = 1 batch shards do not split over the 2 processes" in output
        assert "or set data.shard_by=rows" in output
    assert not (tmp_path / "run").exists()


def _schedule_of(corpus, run_dir, *extra):
    from jaxslm.training.trainer import Trainer

    trainer = Trainer(load_config(None, overrides(corpus, run_dir, *extra)))
    try:
        return trainer.schedule
    finally:
        trainer.lock.release()


def test_warmup_holds_for_time_bounded_and_short_runs(corpus, tmp_path):
    """`warmup_steps` warms up a run bounded by time alone, then the rate stays at its peak;
    warmup longer than the run is kept (with a warning), as transformers' schedules do."""
    import torch
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    timed = ["budget.max_steps=null", "budget.max_seconds=600", "schedule.warmup_steps=20"]
    schedule = _schedule_of(corpus, tmp_path / "timed", *timed)
    lrs = [float(schedule(step)) for step in (0, 1, 10, 20, 500)]
    np.testing.assert_allclose(lrs, [0, 1.5e-4, 1.5e-3, 3e-3, 3e-3], rtol=1e-6)

    short = ["budget.max_steps=30", "schedule.warmup_steps=50", "schedule.decay=cosine"]
    with pytest.warns(UserWarning, match="50 warmup steps outlast the run's 30"):
        schedule = _schedule_of(corpus, tmp_path / "short", *short, "optimizer.min_lr=3e-4")
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=3e-3)
    reference = get_cosine_with_min_lr_schedule_with_warmup(optimizer, 50, 30, min_lr=3e-4)
    want = []
    for _ in range(30):
        want.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    np.testing.assert_allclose([float(schedule(step)) for step in range(30)], want, rtol=1e-5)


def test_the_last_step_is_ranked_by_its_held_out_loss(corpus, tmp_path):
    """The final checkpoint (step 6, not a checkpoint step) carries the held-out loss of its
    step, so that keep_best can rank it."""
    from jaxslm.training.step_checkpoints import BEST_METRIC, RunCheckpoints

    run_dir = tmp_path / "run"
    extra = [
        "budget.max_steps=6",
        "eval.every_steps=3",
        "eval.batches=2",
        "checkpoint.every_steps=4",
    ]
    train_here(corpus, run_dir, *extra, "checkpoint.keep=1", "checkpoint.keep_best=true")
    logged = {r["step"]: r["eval_loss"] for r in read_metrics(run_dir) if "eval_loss" in r}
    checkpoints = RunCheckpoints(run_dir, 1, True, False, True)
    assert checkpoints.manager.metrics(6) == {BEST_METRIC: pytest.approx(logged[6])}
    checkpoints.close()


def test_two_processes_agree_on_held_out_batches(corpus, tmp_path):
    """With one row per process the two processes' validation records make 44 and 43 batches:
    the one that runs out pads, so both run the same steps and the loss is the oracle's."""
    import jaxslm
    from jaxslm.data.pipeline import make_pipeline
    from jaxslm.training.setup import pipeline_config, plan_run

    run_dir = tmp_path / "run"
    held_out = ["data.batch_size=2", "eval.every_steps=2", "eval.batches=50"]
    train_two_processes(corpus, run_dir, "budget.max_steps=2", *held_out)
    cfg = load_config(run_dir / "config.yaml")
    plan, config = plan_run(cfg), pipeline_config(cfg, "validation", 1)
    batches = [
        list(make_pipeline(plan.corpus, plan.tokenizer, plan.vocab, config, index, 2))[:50]
        for index in range(2)
    ]
    assert sorted(len(b) for b in batches) == [43, 44]
    model, total, count = jaxslm.load(run_dir), 0.0, 0.0
    for batch in batches[0] + batches[1]:
        logits = model.logits(batch["tokens"], batch["segment_ids"], batch["positions"])
        logits = logits.astype(np.float64)
        top = logits.max(-1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
        nll = -np.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
        total += float((nll * batch["loss_mask"]).sum())
        count += float(batch["loss_mask"].sum())
    logged = [r["eval_loss"] for r in read_metrics(run_dir) if "eval_loss" in r]
    np.testing.assert_allclose(logged, [total / count], rtol=1e-4)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["optimizer.learning_rate=1"], "did you mean 'optimizer.lr'"),
        (["data.batch_size=big"], "data.batch_size"),
        (["mesh.data=2", "mesh.tensor=3"], "needs 6 devices but 8 are present"),
        (["data.batch_size=6"], "data.batch_size=6"),
        (["data.batch_size=6", "mesh.data=4"], "make data.batch_size a multiple of 4"),
    ],
)
def test_bad_configs_fail_before_any_work(tmp_path, extra, message):
    corpus = tmp_path / "never_built"
    result = subprocess.run(
        command(corpus, tmp_path / "run", *extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert not corpus.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "change, key",
    [
        ("model.hidden_size=64", r"does not continue \(model.hidden_size: \d+ there, 64 here"),
        ("seed=1", r"seed: 0 there, 1 here\)"),
        ("optimizer.lr=1e-2", r"optimizer.lr: \S+ there, 0.01 here"),
        ("schedule.decay=cosine", r"schedule.decay: '\w+' there, 'cosine' here"),
    ],
)
def test_resume_refuses_a_different_model_or_seed(corpus, reference, tmp_path, change, key):
    import shutil

    from jaxslm.errors import JaxslmError

    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    with pytest.raises(JaxslmError, match=key):
        train_here(corpus, run_dir, change)


def test_resume_refuses_a_corpus_changed_under_the_run(corpus, reference, tmp_path):
    """The run keeps its corpus's fingerprint (tests/test_corpus_build.py checks what changes
    it); here the corpus stays and the saved print says it had other records."""
    import json
    import shutil

    from jaxslm.errors import JaxslmError

    run_dir = shutil.copytree(reference[0], tmp_path / "run")
    fingerprint = run_dir / "corpus_fingerprint.json"
    saved = json.loads(fingerprint.read_text())
    fingerprint.write_text(json.dumps({**saved, "records": "0" * 64}))
    with pytest.raises(JaxslmError, match="changed since .*its record files differ"):
        train_here(corpus, run_dir, f"budget.max_steps={STEPS + 1}")


def test_a_failed_resume_leaves_the_run_files_as_they_were(corpus, reference, tmp_path):
    """Nothing of the new config is written before a checkpoint restores."""
    import os
    import shutil

    from jaxslm.errors import JaxslmError

    run_dir = shutil.copytree(reference[0], tmp_path / "run")
    for step_dir in (run_dir / "checkpoints").iterdir():
        os.truncate(step_dir / "params" / "_METADATA", 10)
    before = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "jaxslm.json")}
    with pytest.raises(JaxslmError, match="no intact checkpoint"), pytest.warns(UserWarning):
        train_here(corpus, run_dir, "logging.every_steps=2", f"budget.max_steps={STEPS + 1}")
    assert {name: (run_dir / name).read_bytes() for name in before} == before


def test_records_after_a_stop_between_logged_steps_equal_the_uninterrupted_runs(
    corpus, tmp_path, monkeypatch
):
    """A run stopped at step 5 (as SIGTERM stops it) and resumed logs step 8's stream shares
    over steps 5-8, as the uninterrupted run does: the counts travel in the checkpoint."""
    from jaxslm.training.hooks import StopRequests

    extra = ["logging.every_steps=4", "budget.max_steps=8", "checkpoint.every_steps=100"]
    train_here(corpus, tmp_path / "whole", *extra)
    stop_at_five = StopRequests.reason
    monkeypatch.setattr(
        StopRequests, "reason", lambda self, step, total: "test" if step == 5 else None
    )
    train_here(corpus, tmp_path / "stopped", *extra)
    monkeypatch.setattr(StopRequests, "reason", stop_at_five)
    summary = train_here(corpus, tmp_path / "stopped", *extra)
    assert summary["start_step"] == 5
    whole, resumed = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "stopped")
    assert [r["step"] for r in resumed] == [r["step"] for r in whole] == [4, 8]
    for key in ("tokens_text", "tokens_interleaved", "tokens_speech", "loss"):
        assert resumed[-1][key] == whole[-1][key], key


def test_a_missing_corpus_is_refused_unless_the_toy_is_asked_for(tmp_path):
    """A mistyped data.corpus never trains on the built-in toy language."""
    from jaxslm.errors import JaxslmError

    missing = tmp_path / "my_corpus_typo"
    with pytest.raises(JaxslmError, match="no such corpus.*data.build_synthetic=true"):
        train_here(missing, tmp_path / "run")
    assert not missing.exists()


def test_a_model_folder_is_not_a_run_dir(corpus, llama_ckpt, tmp_path):
    """Training would rewrite the imported model's jaxslm.json beside its parameters."""
    import shutil

    from jaxslm.errors import JaxslmError

    model_dir = shutil.copytree(llama_ckpt, tmp_path / "llama")
    before = (model_dir / "jaxslm.json").read_bytes()
    with pytest.raises(JaxslmError, match="holds a model that no training run made"):
        train_here(corpus, model_dir)
    assert (model_dir / "jaxslm.json").read_bytes() == before
    assert not (model_dir / "run.lock").exists()


def test_export_hf_refuses_a_folder_it_did_not_write_before_training(corpus, tmp_path):
    from jaxslm.errors import JaxslmError

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("draft")
    with pytest.raises(JaxslmError, match="already exists"):
        train_here(corpus, tmp_path / "run", f"budget.export_hf={victim}")
    assert (victim / "thesis.tex").read_text() == "draft"
    assert not (tmp_path / "run").exists()


def test_ctrl_c_stops_like_sigterm_and_a_second_one_interrupts():
    from jaxslm.training.hooks import StopRequests

    stop = StopRequests(None)
    try:
        assert stop.reason(1, None) is None
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.reason(2, None) == "Ctrl-C (checkpoint saved before exit)"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_training_past_an_initial_models_context_is_warned(llama_ckpt, tmp_path):
    from jaxslm.training.setup import plan_run

    small = SyntheticConfig(num_units=20, num_utterances=20, num_text_documents=10)
    corpus = build_synthetic(tmp_path / "toy20", dataclasses.replace(small, num_validation=2))
    overrides = [*TINY, f"data.corpus={corpus}", f"model.init={llama_ckpt}", "data.seq_len=512"]
    with pytest.warns(UserWarning, match="max_position_embeddings=256"):
        plan_run(load_config(None, overrides))


def test_export_hf_at_the_end_writes_and_then_replaces_its_own_export(corpus, tmp_path):
    """The HF folder of budget.export_hf gives the run's logits in transformers, and a rerun
    with a larger budget replaces that earlier export with the later checkpoint's."""
    import torch
    from transformers import AutoModelForCausalLM

    import jaxslm

    run_dir, export = tmp_path / "run", tmp_path / "hf"
    for steps in (1, 2):
        train_here(corpus, run_dir, f"budget.max_steps={steps}", f"budget.export_hf={export}")
        tokens = np.arange(1, 13, dtype=np.int32).reshape(2, 6)
        want = jaxslm.load(run_dir).logits(tokens)
        hf = AutoModelForCausalLM.from_pretrained(export).eval()
        with torch.no_grad():
            got = hf(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()
        np.testing.assert_allclose(got, want, atol=2e-4, rtol=2e-4)


def test_a_new_budget_warns_only_when_it_moves_the_rates():
    from jaxslm.training.trainer import _rates_differ

    def cfg(*extra):
        return load_config(None, [*TINY, *extra])

    constant = ["schedule.decay=constant", "schedule.warmup_fraction=0"]
    assert not _rates_differ(cfg(*constant), cfg(*constant, "budget.max_steps=40"))
    assert _rates_differ(
        cfg("schedule.decay=cosine"), cfg("schedule.decay=cosine", "budget.max_steps=40")
    )
    fraction = ["schedule.decay=constant", "schedule.warmup_fraction=0.1"]
    assert _rates_differ(cfg(*fraction), cfg(*fraction, "budget.max_steps=40"))
