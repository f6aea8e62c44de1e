"""Every GPU measurement of jaxslm in one command, each stage in its own capped process.

    python benchmarks/gpu_check.py [--suite training|inference|ladder] [--out DIR] [--work DIR]
        [--stages a,b,c] [--small] [--cap-scale F] [--budget SECONDS]
        [--remats none,save_projections] [--trainer-steps 30] [--trainer-remat auto]
        [--checkpoint-grace 30]

Three suites, each one device command: `training` (the default; the stages below),
`inference` (env, scorer, generate, tokenizer; described after the training targets) and
`ladder` (env, ladder).

Stages of the training suite, in the order they run (each a subprocess of `sys.executable`
in the repo root, under its own wall-clock cap, its whole process group killed at the cap,
its output in OUT/<stage>.log; a stage that fails, hangs or crashes never loses the others):

  env                versions (python, jax, jaxlib, CUDA plugin, flax, optax, orbax, torch,
                     transformers), jax.devices(), device kind, CUDA/cuDNN versions, nvidia-smi,
                     and which Python packages the project needs are missing
  attention          benchmarks/attention.py --json: each attention kernel's errors against
                     the float32 reference and its speed (Llama-3.2-1B heads, 8 x 2048, bf16)
  train_step_jaxslm  benchmarks/train_step.py --side jaxslm, llama1b (vocabulary 128256 + 502),
                     8 x 2048, bf16, 4 packed documents per row, attention auto; once per
                     --remats policy (none first: the trainer's default)
  trainer            the real CLI, python -m jaxslm.train, on the same shape from random init:
                     a generated 128256-entry HF tokenizer + 500 units, the built-in synthetic
                     corpus (built with 500 units), --trainer-steps steps logged every step, no
                     evaluation, no checkpoint before the last step; median MFU and tokens/s of
                     metrics.jsonl after the first 5 steps (compilation). Its remat is the
                     fastest benchmark policy (--trainer-remat auto) or the one named
  train_step_torch   benchmarks/train_step.py --side torch: transformers + torch.compile on the
                     same shape and batch (its compile time is the least predictable, so it
                     runs last, where it cannot squeeze the others)
  ladder             (the ladder suite, --suite ladder) benchmarks/ladder_mfu.py: Cuervo &
                     Marxer's 20m-823m shapes on their micro-batches of 2,050 tokens, bf16;
                     jaxslm's MFU and theirs (nanoGPT's 6N + 12LHQT) beside their A100-80GB
                     figures (cap 300 s: ~5 compilations)

Targets (the summary table's pass/fail):

  train step   jaxslm tokens/s >= 1.2 x torch.compile's, and jaxslm MFU >= 45%
  trainer      MFU (same as tokens/s, same shape) within 10% of the benchmark's, same remat
  attention    each variant: max abs error of out, dq, dk and dv < 0.1 (bf16); its fwd+bwd
               TFLOP/s is reported beside torch's flex_attention

The inference suite (--suite inference) runs the inference benchmarks, each run with
--compile-cache (its first pass with an empty, then a filled persistent compilation cache) and
--json, in order, while the stage's cap lasts (a run the cap cuts keeps what its JSON holds);
the first run of each stage also traces one jaxslm call per configuration (--profile: device
time per op, device<->host copies, in summary.json):

  scorer     benchmarks/evaluate.py --shape qwen0.5b --dtype bfloat16 (Qwen2.5-0.5B
             interleaved shape), sWUGGY-, sBLIMP- and sStoryCloze-like tasks of 512 pairs
             (StoryCloze rows 240-440 units), batch_tokens 16384, 2 repeats; bf16 log-
             likelihoods of both sides also against a float32 torch reference
  generate   benchmarks/generate.py, greedy: 20m bf16 at batch 1, 16, 64; qwen0.5b
             --modality speech bf16 at batch 1, 16; 20m float32 at batch 16 (greedy equality);
             20m bf16 at batch 1, 16 with JAXSLM_DECODE_CHECK_EVERY=1 (a host round trip
             per token instead of one per 8, the GPU default); 20m and qwen0.5b speech with
             JAXSLM_DECODE_LAYERS=split (one weight array and KV cache per layer: no slice of
             a stack copied per step); qwen0.5b speech with XLA's dynamic-slice fusion on
             (matmuls reading each layer's weights in place); last, 20m with
             JAXSLM_DECODE_LAYERS=unrolled
  tokenizer  benchmarks/tokenize_audio.py, mHuBERT-25Hz shape, 300 s of audio: bf16 with
             length buckets of 0.5 s (the default) and 16 s, torch at batch 8 and 1; then
             float32 (unit agreement with torch batch 1)

Inference targets: scorer >= 3x slamkit's loop with >= 99% of pair decisions agreeing;
generation >= 1.5x transformers' generate (bf16), greedy outputs equal in float32; tokenizer
>= 2x the fastest torch setting, a cold first pass (compilation included) under 10 s, units
equal on every frame in float32. Caps: env 30, scorer 200, generate 200, tokenizer 110, and
--budget 530 (estimates, not yet measured on a GPU); OUT then receives 6 files. --small runs
the tiny shapes on a CPU in about a minute.

Default caps of the training suite (seconds): env 30, attention 75, train_step_jaxslm 130 (two
policies), trainer 120, train_step_torch 135, and --budget 360 for the whole run: a stage gets
the smaller of its cap and what is left of the budget, and one with nothing left is skipped,
so the check ends within 6 minutes. Expected on one H200 (estimates, mostly compilation: XLA
~30 s per train step, torch.compile ~60 s): env ~10, attention ~45, train_step_jaxslm ~90,
trainer ~70, torch ~90; about 5 minutes. --cap-scale F scales every cap, the budget and the
grace; a stage cut by the budget can be rerun alone (--stages NAME). The trainer's final
checkpoint (about 15 GB of float32 parameters and AdamW moments) is timed and cut after
--checkpoint-grace seconds: the figures come from metrics.jsonl, written before it.

A stage whose packages are missing is skipped ("skipped: missing X"). The benchmark stages
need jax, flax, optax, orbax, torch and transformers (on the GPU image); the trainer also needs
grain, tensorflow-datasets, array-record and their dependencies (not on it); tensorboardX is
optional (without it the trainer runs with logging.tensorboard=false).

On the GPU machine (Python 3.12, jax 0.11.2 with the CUDA plugin, torch and transformers
installed; no grain, tensorflow-datasets, array-record, tensorboardX, promise, librosa,
soundfile, soxr; and a flax of unknown version, while flax 0.12.8 and 0.12.9 cannot import
nnx under jax 0.11.2): first run `bash benchmarks/gpu_wheels.sh` here, which downloads their
Python 3.12 wheels and flax 0.12.12's into .whl/, then one device run, carrying .whl, with the
command

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH || exit; \\
        python3 benchmarks/gpu_check.py

and a timeout_s of about 420 (the install takes seconds); for the inference suite, the same
command ending in `python3 benchmarks/gpu_check.py --suite inference`, with a timeout_s of
about 540 (its stages need only flax of those wheels). The env stage says which packages are
missing or fail to import, and the stages that blocks. OUT defaults to $OUT when set (the
device machine's folder that comes back), else gpu_check_out/. OUT receives at most 7 files,
within the 8 files the device machine returns: the five stage logs, summary.md (the table to
paste into benchmarks/RESULTS.md) and summary.json (everything measured, the attention rows
and trainer metrics included). Bulky outputs (corpus, tokenizer, the trainer's run directory,
each stage's JSON) go to --work (default /tmp/jaxslm_gpu_check); the trainer's checkpoints are
deleted after its stage.

--small runs everything with tiny shapes (train_step --shape small, 2 x 256, float32; a 4-layer
trainer model with a 522-entry tokenizer, 12 steps; attention 2 x 256): the whole check runs
on a CPU in a few minutes, to test this script before spending GPU time. On the CPU,
torch.compile is off (train_step.py's auto) and MFU is n/a.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()
SUITES = {
    "training": ("env", "attention", "train_step_jaxslm", "trainer", "train_step_torch"),
    "inference": ("env", "scorer", "generate", "tokenizer"),
    "ladder": ("env", "ladder"),
}
STAGES = tuple(dict.fromkeys(stage for stages in SUITES.values() for stage in stages))
CAPS = {
    "env": 30,
    "attention": 75,
    "train_step_jaxslm": 130,
    "trainer": 120,
    "train_step_torch": 135,
    "ladder": 300,
    "scorer": 200,
    "generate": 200,
    "tokenizer": 110,
}
BUDGETS = {"training": 360, "inference": 530, "ladder": 360}
BENCH_NEEDS = ("jax", "numpy", "flax", "optax", "orbax", "torch", "transformers")
STAGE_NEEDS = {
    "env": (),
    "attention": ("jax", "numpy"),
    "train_step_jaxslm": BENCH_NEEDS,
    "train_step_torch": BENCH_NEEDS,
    "ladder": BENCH_NEEDS,
    "scorer": (*BENCH_NEEDS, "tokenizers"),
    "generate": (*BENCH_NEEDS, "tokenizers"),
    "tokenizer": BENCH_NEEDS,
    "trainer": (
        "jax",
        "numpy",
        "flax",
        "optax",
        "orbax",
        "transformers",
        "tokenizers",
        "sentencepiece",
        "yaml",
        "tqdm",
        "filelock",
        "grain",
        "array_record",
        "portpicker",
        "cloudpickle",
        "tensorflow_datasets",
        "tensorflow_metadata",
        "etils",
        "importlib_resources",
        "tree",
        "immutabledict",
        "promise",
        "termcolor",
        "toml",
    ),
}
OPTIONAL = {"trainer": {"tensorboardX": "logging.tensorboard=false"}}
# Everything the env stage reports on: import name -> what needs it.
CHECKED_MODULES = {
    name: ", ".join(stage for stage, needs in STAGE_NEEDS.items() if name in needs)
    for name in dict.fromkeys(name for needs in STAGE_NEEDS.values() for name in needs)
}
CHECKED_MODULES.update(
    tensorboardX="trainer (optional: TensorBoard files)",
    safetensors="HF import/export",
    matplotlib="scaling report plots",
    librosa="audio tokenization (no stage here)",
    soundfile="audio tokenization (no stage here)",
    soxr="audio tokenization (no stage here)",
    simple_parsing="tensorflow-datasets' command line only",
)
DISTRIBUTIONS = (
    "jax",
    "jaxlib",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "flax",
    "optax",
    "orbax-checkpoint",
    "numpy",
    "ml_dtypes",
    "torch",
    "triton",
    "transformers",
    "tokenizers",
    "grain",
    "tensorflow-datasets",
    "array-record",
    "tensorboardX",
    "protobuf",
)
# A package can be installed and still fail to import: env tries these imports so that it says
# why the stages that need them will fail. flax 0.12.8 and 0.12.9 stop at `from flax import nnx`
# under jax 0.11.2 (AttributeError: jax.experimental.hijax has no HiPrimitive; google/flax#5596);
# flax 0.12.10 and later import under jax 0.11.0 and 0.11.2.
IMPORT_CHECKS = {"flax": "flax.nnx", "optax": "optax", "orbax": "orbax.checkpoint"}
ERROR_LIMIT = 0.1  # max abs error of an attention variant's out/dq/dk/dv (bf16)
SPEEDUP_TARGET = 1.2  # jaxslm tokens/s over torch.compile's
MFU_TARGET = 0.45
TRAINER_TOLERANCE = 0.10  # trainer MFU within 10% of the benchmark's
SCORER_TARGET, SCORER_AGREEMENT = 3.0, 0.99  # pairs/s over slamkit's loop; pair decisions
# Runs that time an alternative to one of the GPU choices, by label ending (XLA_FLAGS values
# are appended to the flags already set). Dynamic-slice fusion (off in XLA by default) lets
# a matmul read one layer's weights inside the stacked parameters where a scanned layer loop
# otherwise copies them out first: the decoding step's profile on the CPU shows such copies
# of every layer's MLP weights and KV cache window (benchmarks/RESULTS.md).
BACKEND_ALTERNATIVES = {
    "unrolled": {"JAXSLM_DECODE_LAYERS": "unrolled"},
    "check every 1": {"JAXSLM_DECODE_CHECK_EVERY": "1"},
    "split": {"JAXSLM_DECODE_LAYERS": "split"},
    "slice fusion": {"XLA_FLAGS": "--xla_gpu_enable_dynamic_slice_fusion=true"},
}
GENERATE_TARGET = 1.5  # tokens/s over transformers' generate
TOKENIZER_TARGET, TOKENIZER_COLD_S = 2.0, 10.0  # audio s/s over torch's best; cold first pass
NUM_UNITS = 500  # train_step.py's speech units
FLEX = "torch flex_attention"


@dataclass(frozen=True)
class Mode:
    """The shapes of a run: full (the GPU measurement) or small (a CPU test of this script).
    `shape` is a preset of jaxslm.models.presets, train_step.py's --shape and the trainer's
    model.preset, with NUM_UNITS speech units after its text tokenizer's entries."""

    small: bool
    shape: str
    seq_len: int
    batch: int
    dtype: str
    steps: tuple[str, ...]  # train_step.py's --steps/--warmup/--repeat
    skip_steps: int

    @classmethod
    def make(cls, small: bool) -> Mode:
        if small:
            steps = ("--steps", "3", "--warmup", "1", "--repeat", "3")
            return cls(True, "small", 256, 2, "float32", steps, 3)
        steps = ("--steps", "5", "--warmup", "2", "--repeat", "3")
        return cls(False, "llama1b", 2048, 8, "bfloat16", steps, 5)


@dataclass
class StageResult:
    """One stage: its status (ok, failed: ..., timeout ..., skipped: ...), time and results."""

    name: str
    status: str = "not run"
    seconds: float = 0.0
    cap: float = 0.0
    data: dict = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def missing_modules(names) -> list[str]:
    """The import names among `names` that cannot be found (without importing them)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a stage: unbuffered output, the repo importable (jaxslm is not
    installed on the GPU machine), plus `extra`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_command(
    command: list[str],
    log_path: Path,
    deadline: float,
    env: dict[str, str],
    watch: Callable[[float], str | None] | None = None,
) -> tuple[str, float]:
    """Run `command` in the repo root, appending its output to `log_path`, until it exits or
    `deadline` (time.monotonic()) passes; then its process group is killed. `watch(elapsed)`
    is polled while it runs: a string it returns ends the command early with that status.
    Returns (status, seconds): ok, failed (exit N), timeout after S s, or watch's status."""
    start = time.monotonic()
    with log_path.open("a") as out:
        out.write(f"\n$ {shlex.join(command)}\n")
        out.flush()
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while process.poll() is None:
                now = time.monotonic()
                if now >= deadline:
                    kill_group(process)
                    out.write(f"\n[gpu_check] killed at the cap after {now - start:.0f} s\n")
                    return f"timeout after {now - start:.0f} s", now - start
                stop = watch(now - start) if watch else None
                if stop is not None:
                    kill_group(process)
                    out.write(f"\n[gpu_check] stopped: {stop}\n")
                    return stop, time.monotonic() - start
                time.sleep(0.25)
        except BaseException:
            kill_group(process)
            raise
    seconds = time.monotonic() - start
    with contextlib.suppress(ProcessLookupError):  # helpers it left behind (compile workers)
        os.killpg(process.pid, signal.SIGKILL)
    return ("ok" if process.returncode == 0 else f"failed (exit {process.returncode})"), seconds


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line[-200:] for line in text[-lines:])


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


class Check:
    """The run: the stages selected, their caps, the work and output folders, the results."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.mode = Mode.make(args.small)
        self.out = Path(args.out).resolve()
        self.work = Path(args.work).resolve()
        self.stages = args.stages
        self.scale = args.cap_scale
        self.deadline = time.monotonic() + args.budget * self.scale
        self.results = {name: StageResult(name) for name in self.stages}
        self.py = sys.executable

    # ---- running -----------------------------------------------------------------------

    def run(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        for name in self.stages:
            for path in self.outputs(name):
                remove(path)
        log(f"out {self.out}, work {self.work}, stages {', '.join(self.stages)}")
        try:
            for name in self.stages:
                self.run_stage(name)
        finally:  # also on Ctrl-C: what was measured is written
            self.summarize()

    def outputs(self, name: str) -> list[Path]:
        """What a stage writes (removed before it runs, so nothing stale is read)."""
        files = {
            "env": ["env.json"],
            "attention": ["attention.json"],
            "train_step_jaxslm": [f"train_step_jaxslm_{r}.json" for r in self.args.remats],
            "train_step_torch": ["train_step_torch.json"],
            "trainer": ["trainer.yaml", "trainer_run", "tokenizer", "corpus"],
            "ladder": ["ladder.json"],
        }.get(name, [f"{name}_runs"])
        return [self.out / f"{name}.log", *(self.work / f for f in files)]

    def run_stage(self, name: str) -> None:
        result = self.results[name]
        result.cap = CAPS[name] * self.scale
        left = self.deadline - time.monotonic()
        missing = missing_modules(STAGE_NEEDS[name])
        if missing:
            result.status = f"skipped: missing {', '.join(missing)}"
        elif left < 5:
            result.status = "skipped: the --budget is spent"
        if result.status != "not run":
            log(f"{name}: {result.status}")
            (self.out / f"{name}.log").write_text(result.status + "\n")
            return
        cap = min(result.cap, left)
        log(f"start {name} (cap {cap:.0f} s)")
        log_path = self.out / f"{name}.log"
        start = time.monotonic()
        try:
            result.status = getattr(self, f"stage_{name}")(result, log_path, start + cap)
        except Exception as error:  # a bug in one stage's handling must not lose the others
            result.status = f"failed: {type(error).__name__}: {error}"
        result.seconds = time.monotonic() - start
        log(f"end {name}: {result.status} in {result.seconds:.1f} s")
        if not result.status.startswith(("ok", "skipped")):
            print(tail(log_path), flush=True)

    def stage_env(self, result: StageResult, log_path: Path, deadline: float) -> str:
        path = self.work / "env.json"
        command = [self.py, str(THIS), "--internal", "env", "--json", str(path)]
        # no preallocation: this process only looks at the device
        env = child_env(XLA_PYTHON_CLIENT_PREALLOCATE="false")
        status, _ = run_command(command, log_path, deadline, env)
        result.data = read_json(path) or {}
        if status == "ok" and not result.data:
            return "failed: no env.json written"
        return status

    def stage_attention(self, result: StageResult, log_path: Path, deadline: float) -> str:
        script = REPO / "benchmarks" / "attention.py"
        if not script.is_file():
            return "skipped: benchmarks/attention.py does not exist yet"
        path = self.work / "attention.json"
        command = [self.py, str(script), "--json", str(path)]
        if self.mode.small:
            command += ["--shape", "2,256,4,2,16", "--repeat", "2"]
        status, _ = run_command(command, log_path, deadline, child_env())
        rows = read_json(path)
        result.data = {"rows": rows if isinstance(rows, list) else []}
        if status == "ok" and rows is None:
            return "failed: no JSON written"
        return status

    def train_step_command(self, side: str, json_path: Path) -> list[str]:
        m = self.mode
        command = [self.py, str(REPO / "benchmarks" / "train_step.py"), "--side", side]
        command += ["--shape", m.shape, "--seq-len", str(m.seq_len), "--batch", str(m.batch)]
        command += ["--dtype", m.dtype, *m.steps, "--json", str(json_path)]
        return command

    def stage_train_step_jaxslm(self, result: StageResult, log_path: Path, deadline: float) -> str:
        statuses = []
        result.data = {"variants": {}}
        for remat in self.args.remats:
            if time.monotonic() > deadline - 1:
                result.data["variants"][remat] = {"status": "skipped: the stage's cap is spent"}
                statuses.append(f"remat {remat} skipped (cap spent)")
                continue
            path = self.work / f"train_step_jaxslm_{remat}.json"
            command = self.train_step_command("jaxslm", path)
            command += ["--documents", "4", "--remat", remat, "--attention", "auto"]
            status, seconds = run_command(command, log_path, deadline, child_env())
            measured = read_json(path)
            if status == "ok" and measured is None:
                status = "failed: no JSON written"
            log(f"  train_step_jaxslm remat {remat}: {status} in {seconds:.1f} s")
            entry = {"status": status, "seconds": seconds}
            if measured:
                entry.update(measured["results"][0], config=measured["config"])
            result.data["variants"][remat] = entry
            statuses.append(status if status == "ok" else f"remat {remat} {status}")
        failed = [s for s in statuses if s != "ok"]
        return "; ".join(failed) if failed else "ok"

    def stage_train_step_torch(self, result: StageResult, log_path: Path, deadline: float) -> str:
        path = self.work / "train_step_torch.json"
        # JAX is imported but unused there: keep it from preallocating the GPU's memory
        env = child_env(XLA_PYTHON_CLIENT_PREALLOCATE="false")
        status, _ = run_command(self.train_step_command("torch", path), log_path, deadline, env)
        measured = read_json(path)
        if measured:
            result.data = dict(measured["results"][0], config=measured["config"])
        elif status == "ok":
            return "failed: no JSON written"
        return status

    def stage_ladder(self, result: StageResult, log_path: Path, deadline: float) -> str:
        path = self.work / "ladder.json"
        command = [self.py, str(REPO / "benchmarks" / "ladder_mfu.py"), "--json", str(path)]
        if self.mode.small:
            command += ["--sizes", "20m", "--seq-len", "256", "--micro-batch", "2"]
            command += ["--dtype", "float32", "--steps", "1"]
        status, _ = run_command(command, log_path, deadline, child_env())
        measured = read_json(path)
        result.data = {"rows": measured["results"] if measured else []}
        if status == "ok" and measured is None:
            return "failed: no JSON written"
        return status

    # ---- the inference stages: benchmark scripts, each run writing its --json ------------

    def inference_runs(self, name: str) -> list[tuple[str, list[str]]]:
        """(label, arguments of benchmarks/<script>.py) of each run of an inference stage, in
        order: the figures the targets need first, checks that a cut cap may drop after."""
        if self.mode.small:
            return {
                "scorer": [("tiny", ["--shape", "tiny", "--task", "swuggy", "--pairs", "16"])],
                "generate": [("tiny", ["--shape", "tiny", "--batch", "1", "4"])],
                "tokenizer": [("tiny", ["--shape", "tiny", "--seconds", "12"])],
            }[name]
        return {
            "scorer": [
                ("qwen0.5b bf16", ["--shape", "qwen0.5b", "--dtype", "bfloat16"]),
            ],
            "generate": [
                ("20m bf16", ["--shape", "20m", "--dtype", "bfloat16", "--batch", "1", "16", "64"]),
                (
                    "qwen0.5b speech bf16",
                    ["--shape", "qwen0.5b", "--modality", "speech", "--dtype", "bfloat16"],
                ),
                ("20m float32", ["--shape", "20m", "--batch", "16", "--repeat", "1"]),
                (
                    "20m bf16 check every 1",
                    ["--shape", "20m", "--dtype", "bfloat16", "--batch", "1", "16"],
                ),
                (
                    "20m bf16 split",
                    ["--shape", "20m", "--dtype", "bfloat16", "--batch", "1", "16"],
                ),
                (
                    "qwen0.5b speech bf16 split",
                    ["--shape", "qwen0.5b", "--modality", "speech", "--dtype", "bfloat16"],
                ),
                (
                    "qwen0.5b speech bf16 slice fusion",
                    ["--shape", "qwen0.5b", "--modality", "speech", "--dtype", "bfloat16"],
                ),
                (
                    "20m bf16 unrolled",
                    ["--shape", "20m", "--dtype", "bfloat16", "--batch", "1", "16"],
                ),
            ],
            "tokenizer": [
                ("mhubert bf16", ["--dtype", "bfloat16", "--bucket-seconds", "0.5,16"]),
                ("mhubert float32", ["--dtype", "float32", "--torch-batch", "1", "--repeat", "1"]),
            ],
        }[name]

    def inference_command(self, name: str, label: str, extra: list[str]) -> list[str]:
        script = {"scorer": "evaluate", "generate": "generate", "tokenizer": "tokenize_audio"}
        folder = self.work / f"{name}_runs" / label.replace(" ", "_")
        command = [self.py, str(REPO / "benchmarks" / f"{script[name]}.py"), *extra]
        command += [
            "--compile-cache",
            str(folder / "xla_cache"),
            "--json",
            str(folder / "out.json"),
        ]
        if label == self.inference_runs(name)[0][0]:  # the first run of each stage: a trace
            command += ["--profile", str(folder / "trace")]
        if name == "scorer":
            command += ["--task", "swuggy,sblimp,sstorycloze"] if "--task" not in extra else []
            command += ["--batch-tokens", "16384"] if not self.mode.small else []
        if name in ("scorer", "generate"):
            command += (
                ["--repeat", "1" if self.mode.small else "2"] if "--repeat" not in extra else []
            )
        if name == "generate":
            command += ["--modes", "greedy"]
            command += ["--max-new-tokens", "20"] if self.mode.small else []
        if name == "tokenizer" and self.mode.small:
            command += ["--torch-batch", "1", "--batch-seconds", "30", "--repeat", "1"]
        if name == "tokenizer" and "--repeat" not in extra and not self.mode.small:
            command += ["--repeat", "2"]
        folder.mkdir(parents=True, exist_ok=True)
        return command

    def stage_inference(self, name: str, result: StageResult, log_path: Path, deadline: float):
        """Run the stage's benchmark runs in order while its cap lasts; each run's JSON goes
        into result.data["runs"][label]."""
        runs = result.data.setdefault("runs", {})
        statuses = []
        for label, extra in self.inference_runs(name):
            if time.monotonic() > deadline - 5:
                runs[label] = {"status": "skipped: the stage's cap is spent"}
                statuses.append(f"{label} skipped (cap spent)")
                continue
            command = self.inference_command(name, label, extra)
            env = child_env(XLA_PYTHON_CLIENT_PREALLOCATE="false")  # torch shares the GPU
            for suffix, settings in BACKEND_ALTERNATIVES.items():
                if label.endswith(suffix):
                    for variable, value in settings.items():
                        joined = f"{env.get(variable, '')} {value}".strip()
                        env[variable] = joined if variable == "XLA_FLAGS" else value
            status, seconds = run_command(command, log_path, deadline, env)
            measured = read_json(Path(command[command.index("--json") + 1]))
            if status == "ok" and measured is None:
                status = "failed: no JSON written"
            log(f"  {name} {label}: {status} in {seconds:.1f} s")
            runs[label] = {"status": status, "seconds": seconds, **(measured or {})}
            statuses.append(status if status == "ok" else f"{label} {status}")
        failed = [s for s in statuses if s != "ok"]
        return "; ".join(failed) if failed else "ok"

    def stage_scorer(self, result: StageResult, log_path: Path, deadline: float) -> str:
        return self.stage_inference("scorer", result, log_path, deadline)

    def stage_generate(self, result: StageResult, log_path: Path, deadline: float) -> str:
        return self.stage_inference("generate", result, log_path, deadline)

    def stage_tokenizer(self, result: StageResult, log_path: Path, deadline: float) -> str:
        return self.stage_inference("tokenizer", result, log_path, deadline)

    def trainer_remat(self) -> str:
        """--trainer-remat, or (auto) the fastest policy the benchmark measured, else none."""
        if self.args.trainer_remat != "auto":
            return self.args.trainer_remat
        variants = self.results.get("train_step_jaxslm", StageResult("")).data.get("variants", {})
        rates = {r: v["tokens_per_second"] for r, v in variants.items() if v.get("status") == "ok"}
        return max(rates, key=rates.get) if rates else "none"

    def trainer_config(self, remat: str, tensorboard: bool) -> str:
        """The trainer's YAML: the benchmark's shape and optimizer, no evaluation, no
        checkpoint before the end, metrics every step."""
        m = self.mode
        sections = {
            "model": dict(
                init=None,
                preset=m.shape,
                param_dtype="float32",
                dtype=m.dtype,
                remat=remat,
                attention="auto",
            ),
            "vocab": dict(
                mode="interleaved",
                num_units=NUM_UNITS,
                tokenizer=str(self.work / "tokenizer"),
            ),
            "data": dict(
                corpus=str(self.work / "corpus"),
                build_synthetic=True,
                seq_len=m.seq_len,
                batch_size=m.batch,
            ),
            # train_step.py's recipe: AdamW 1e-4 (constant), b2 0.95, decay 0.1, clip 1.0
            "optimizer": dict(lr=1e-4, min_lr=1e-4, weight_decay=0.1, clip_norm=1.0),
            "schedule": dict(warmup_steps=0, warmup_fraction=0.0, decay="constant"),
            "mesh": dict(data=-1),
            "checkpoint": dict(every_steps=10**9, keep=1),
            "logging": dict(every_steps=1, tensorboard=tensorboard, progress_bar=False),
            "eval": dict(every_steps=0, tasks=[]),
            "budget": dict(max_steps=self.args.trainer_steps),
        }
        lines = ["# written by benchmarks/gpu_check.py", "name: gpu_check_trainer"]
        for section, values in sections.items():
            lines.append(f"{section}:")
            lines += [f"  {key}: {json.dumps(value)}" for key, value in values.items()]
        return "\n".join(lines) + "\n"

    def stage_trainer(self, result: StageResult, log_path: Path, deadline: float) -> str:
        m = self.mode
        prepare = [self.py, str(THIS), "--internal", "prepare-trainer", "--work", str(self.work)]
        prepare += ["--preset", m.shape, "--num-units", str(NUM_UNITS)]
        status, seconds = run_command(prepare, log_path, deadline, child_env())
        result.data = {"prepare_seconds": seconds}
        if status != "ok":
            return f"prepare {status}"
        remat = self.trainer_remat()
        tensorboard = not missing_modules(OPTIONAL["trainer"])
        config = self.work / "trainer.yaml"
        config.write_text(self.trainer_config(remat, tensorboard))
        run_dir = self.work / "trainer_run"
        metrics_path = run_dir / "metrics.jsonl"
        steps = self.args.trainer_steps
        grace = self.args.checkpoint_grace * self.scale
        seen: dict[str, float] = {}

        def watch(elapsed: float) -> str | None:
            """Note when the first and last steps are logged; cut the final checkpoint save
            after the grace."""
            if "last" not in seen and metrics_path.is_file():
                records = read_metrics(metrics_path)
                if records:
                    seen.setdefault("first", elapsed)
                if any(r.get("step") == steps for r in records):
                    seen["last"] = elapsed
            if "last" in seen and elapsed - seen["last"] > grace:
                return f"ok (final checkpoint save cut after {grace:.0f} s)"
            return None

        command = [self.py, "-m", "jaxslm.train", "--config", str(config)]
        command.append(f"run_dir={run_dir}")
        status, seconds = run_command(command, log_path, deadline, child_env(), watch)
        records = read_metrics(metrics_path) if metrics_path.is_file() else []
        if "last" not in seen and any(r.get("step") == steps for r in records):
            seen["last"] = seconds  # logged between the last poll and the exit
        remove(run_dir / "checkpoints")  # about 15 GB on the GPU shape
        kept = [r for r in records if r.get("step", 0) > m.skip_steps]
        kernel = re.search(r"attention kernel: (\S+)", log_path.read_text(errors="replace"))
        result.data.update(
            remat=remat,
            attention_kernel=kernel.group(1) if kernel else None,
            tensorboard=tensorboard,
            run_seconds=seconds,
            first_step_logged_s=seen.get("first"),
            last_step_logged_s=seen.get("last"),
            steps_logged=len(records),
            steps_used=len(kept),
            metrics=records,
        )
        if "last" in seen and status == "ok":
            result.data["final_save_s"] = seconds - seen["last"]
        for key in ("tokens_per_second", "mfu"):
            values = [r[key] for r in kept if isinstance(r.get(key), int | float)]
            result.data[key] = statistics.median(values) if values else None
        if status.startswith("timeout") and "last" in seen:
            return f"ok (final checkpoint save cut by the cap after {seconds - seen['last']:.0f} s)"
        if status.startswith("ok") and not kept:
            return f"failed: no steps after step {m.skip_steps} in metrics.jsonl"
        return status

    # ---- the summary -------------------------------------------------------------------

    def summarize(self) -> None:
        env = self.results.get("env", StageResult("env")).data
        lines = self.header(env) + ["", *self.stage_table(), "", *self.result_table()]
        text = "\n".join(lines) + "\n"
        (self.out / "summary.md").write_text(text)
        summary = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": self.command(),
            "mode": "small" if self.mode.small else "full",
            "device_kind": env.get("device_kind"),
            "env": env,
            "stages": {
                name: {
                    "status": r.status,
                    "seconds": r.seconds,
                    "cap": r.cap,
                    "log": str(self.out / f"{name}.log"),
                    **r.data,
                }
                for name, r in self.results.items()
            },
            "table": self.rows,
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        print("\n" + text, flush=True)
        log(f"wrote {self.out / 'summary.md'} and {self.out / 'summary.json'}")

    def command(self) -> str:
        return shlex.join(["python3", "benchmarks/gpu_check.py", *sys.argv[1:]])

    def header(self, env: dict) -> list[str]:
        versions = env.get("versions", {})
        names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch", "transformers")
        plugin = [f"{k} {v}" for k, v in versions.items() if k.startswith("jax-cuda")][:1]
        software = [f"Python {env.get('python', platform.python_version())}"]
        software += [f"{n} {versions[n]}" for n in names if n in versions] + plugin
        cuda = env.get("cuda_versions") or {}
        shown = [k for k in cuda if any(w in k for w in ("runtime", "driver", "cudnn"))]
        software += [f"{k} {cuda[k]}" for k in shown]
        if env.get("torch_cudnn"):
            software.append(f"torch cuDNN {env['torch_cudnn']}")
        mode = "small (CPU test shapes)" if self.mode.small else "full"
        return [
            f"## GPU check: {datetime.date.today().isoformat()}, "
            f"{env.get('device_kind', 'device unknown (env stage not run)')}",
            "",
            f"- **Date**: {datetime.datetime.now().astimezone().isoformat(timespec='minutes')}",
            f"- **Device**: {env.get('device_kind', 'n/a')} ({env.get('gpu_name') or 'no GPU'}), "
            f"{env.get('device_count', '?')} device(s), jax backend {env.get('backend', '?')}",
            f"- **Software**: {', '.join(software)}",
            f"- **Command**: `{self.command()}` ({mode})",
        ]

    def stage_table(self) -> list[str]:
        lines = ["| stage | status | seconds | cap s |", "|---|---|---|---|"]
        for r in self.results.values():
            lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.cap:.0f} |")
        return lines

    def result_table(self) -> list[str]:
        self.rows = self.train_step_rows() + self.trainer_rows() + self.attention_rows()
        self.rows += self.ladder_rows() + self.scorer_rows() + self.generate_rows()
        self.rows += self.tokenizer_rows()
        lines = [
            "| check | jaxslm | PyTorch | ratio | target | result |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            cells = (row[k] for k in ("check", "jaxslm", "torch", "ratio", "target", "result"))
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def jaxslm_variants(self) -> dict:
        return self.results.get("train_step_jaxslm", StageResult("")).data.get("variants", {})

    def train_step_rows(self) -> list[dict]:
        torch_data = self.results.get("train_step_torch", StageResult("")).data
        torch_rate = torch_data.get("tokens_per_second")
        torch_text = figure(torch_data) if torch_rate else "n/a"
        if torch_data.get("note"):
            torch_text += f" ({torch_data['note']})"
        rows = []
        for remat, v in self.jaxslm_variants().items():
            rate = v.get("tokens_per_second")
            ratio = rate / torch_rate if rate and torch_rate else None
            verdicts = [
                verdict("speed", ratio, ratio is not None and ratio >= SPEEDUP_TARGET),
                verdict("MFU", v.get("mfu"), (v.get("mfu") or 0) >= MFU_TARGET),
            ]
            rows.append(
                dict(
                    check=f"train step {self.mode.shape} {self.mode.batch}x{self.mode.seq_len}, "
                    f"remat {remat}",
                    jaxslm=figure(v) if rate else v.get("status", "n/a"),
                    torch=torch_text,
                    ratio=f"{ratio:.2f}x" if ratio else "n/a",
                    target=f">= {SPEEDUP_TARGET}x torch, MFU >= {MFU_TARGET:.0%}",
                    result="; ".join(verdicts),
                )
            )
        return rows

    def trainer_rows(self) -> list[dict]:
        if "trainer" not in self.results:
            return []
        data = self.results["trainer"].data
        remat = data.get("remat") or self.trainer_remat()
        bench = self.jaxslm_variants().get(remat, {})
        rate, bench_rate = data.get("tokens_per_second"), bench.get("tokens_per_second")
        # Same model and sequence length: the MFU ratio is the tokens/s ratio.
        ratio = rate / bench_rate if rate and bench_rate else None
        ok = ratio is not None and ratio >= 1 - TRAINER_TOLERANCE
        trainer_text = figure(data) if rate else self.results["trainer"].status
        if data.get("steps_used"):
            trainer_text += f", median of steps {self.mode.skip_steps + 1}-{data['steps_logged']}"
        if data.get("first_step_logged_s") is not None:
            started = data["first_step_logged_s"]
            trainer_text += f"; step 1 logged after {started:.0f} s (start-up, compile)"
        if data.get("final_save_s") is not None:
            trainer_text += f"; final checkpoint {data['final_save_s']:.0f} s"
        bench_text = f"benchmark: {figure(bench)}" if bench_rate else "no benchmark figure"
        check = f"trainer CLI, remat {remat}"
        if data.get("attention_kernel"):
            check += f", attention {data['attention_kernel']}"
        return [
            dict(
                check=check,
                jaxslm=trainer_text,
                torch=bench_text,
                ratio=f"{ratio:.2f}x of benchmark" if ratio else "n/a",
                target=f"MFU within {TRAINER_TOLERANCE:.0%} of the benchmark's",
                result=verdict("", ratio, ok).strip(": "),
            )
        ]

    def attention_rows(self) -> list[dict]:
        if "attention" not in self.results:
            return []
        rows = self.results["attention"].data.get("rows", [])
        flex = next((r for r in rows if r.get("variant") == FLEX and r.get("status") == "ok"), {})
        out = []
        for r in rows:
            name = str(r.get("variant", "?"))
            if r.get("status") != "ok":
                out.append(
                    dict(
                        check=f"attention: {name}",
                        jaxslm="",
                        torch="",
                        ratio="",
                        target=f"max abs err < {ERROR_LIMIT}",
                        result=f"fail ({str(r.get('status'))[:120]})",
                    )
                )
                continue
            errs = [r.get(k) for k in ("out_err", "dq_err", "dk_err", "dv_err")]
            worst = max(e if isinstance(e, int | float) else float("inf") for e in errs)
            speed = f"fwd+bwd {r['fwd_bwd_tflops']:.3g} TFLOP/s ({r['fwd_bwd_ms']:.2f} ms)"
            speed += f", fwd {r['fwd_tflops']:.3g}; max err {worst:.3g}"
            torch_side = name.startswith("torch")
            ratio = ""
            if not torch_side and flex.get("fwd_bwd_tflops"):
                ratio = f"{r['fwd_bwd_tflops'] / flex['fwd_bwd_tflops']:.2f}x flex"
            out.append(
                dict(
                    check=f"attention: {name}",
                    jaxslm="" if torch_side else speed,
                    torch=speed if torch_side else "",
                    ratio=ratio,
                    target=f"max abs err < {ERROR_LIMIT}",
                    result="pass" if worst < ERROR_LIMIT else "fail",
                )
            )
        return out

    def ladder_rows(self) -> list[dict]:
        if "ladder" not in self.results:
            return []
        out = []
        for r in self.results["ladder"].data.get("rows", []):
            theirs, ours = r["their_a100_mfu"], r.get("mfu_nanogpt")
            out.append(
                dict(
                    check=f"ladder {r['size']} {r['micro_batch']}x{r['seq_len']}",
                    jaxslm=f"{figure(r)}, nanoGPT-convention MFU {percent(ours)}",
                    torch=f"their A100-80GB MFU {percent(theirs)} (nanoGPT convention)",
                    ratio=f"{ours / theirs:.2f}x" if ours else "n/a",
                    target="reported beside theirs",
                    result="measured",
                )
            )
        return out

    def inference_results(self, name: str) -> list[tuple[str, dict]]:
        """(run label, run data) of each run of an inference stage that wrote figures."""
        runs = self.results.get(name, StageResult(name)).data.get("runs", {})
        return [(label, run) for label, run in runs.items() if run.get("results")]

    def scorer_rows(self) -> list[dict]:
        rows = []
        for label, run in self.inference_results("scorer"):
            for r in run["results"]:
                ratio, agree = r["jaxslm"] / r["torch"], r["agreement"][1]
                cold, warm = r.get("first_pass_s"), r.get("warm_first_pass_s")
                text = f"{r['jaxslm']:,.1f} pairs/s (bt {r['best']}); first pass {cold:.1f} s"
                text += f" cold, {warm:.1f} s warm" if warm is not None else ""
                extra = ""
                if r.get("float32_jaxslm"):
                    extra = f", LL rel diff to torch fp32 {r['float32_jaxslm'][0]:.1e}"
                rows.append(
                    dict(
                        check=f"scorer {label}, {r['task']}, {r['pairs']} pairs",
                        jaxslm=text + f"; decisions agree {agree:.1%}{extra}" + traced(r),
                        torch=f"{r['torch']:,.1f} pairs/s",
                        ratio=f"{ratio:.2f}x",
                        target=f">= {SCORER_TARGET}x, decisions agree >= {SCORER_AGREEMENT:.0%}",
                        result="; ".join(
                            [
                                verdict("speed", ratio, ratio >= SCORER_TARGET),
                                verdict("agree", agree, agree >= SCORER_AGREEMENT),
                            ]
                        ),
                    )
                )
        return rows

    def generate_rows(self) -> list[dict]:
        rows = []
        for label, run in self.inference_results("generate"):
            for r in run["results"]:
                ratio = r["jaxslm"] / r["hf"]
                cold, warm = r.get("cold_first_call_s"), r.get("warm_first_call_s")
                text = f"{r['jaxslm']:,.0f} tok/s, greedy agree {r['agreement']:.0%}"
                text += f"; first call {cold:.1f} s cold, {warm:.1f} s warm" if cold else ""
                float32 = "float32" in label
                rows.append(
                    dict(
                        check=f"generate {label}, batch {r['batch']}, {r['mode']}",
                        jaxslm=text + traced(r),
                        torch=f"{r['hf']:,.0f} tok/s",
                        ratio=f"{ratio:.2f}x",
                        target="greedy equal" if float32 else f">= {GENERATE_TARGET}x",
                        result=verdict("equal", r["agreement"], r["agreement"] == 1.0)
                        if float32
                        else verdict("speed", ratio, ratio >= GENERATE_TARGET),
                    )
                )
        return rows

    def tokenizer_rows(self) -> list[dict]:
        rows = []
        for label, run in self.inference_results("tokenizer"):
            by_name = {r["name"]: r for r in run["results"]}
            best, torch_best = (
                by_name.get(run.get("best_jaxslm")),
                by_name.get(run.get("best_torch")),
            )
            if not best or not torch_best:
                continue
            ratio = best["audio_seconds_per_second"] / torch_best["audio_seconds_per_second"]
            cold = best.get("first_pass_s")
            float32 = "float32" in label
            verdicts = [verdict("agree", best["agreement"], best["agreement"] == 1.0)]
            if not float32:
                verdicts = [
                    verdict("speed", ratio, ratio >= TOKENIZER_TARGET),
                    verdict("cold", cold, cold is not None and cold < TOKENIZER_COLD_S),
                ]
            warm = best.get("warm_first_pass_s")
            rows.append(
                dict(
                    check=f"tokenizer {label}, {run.get('audio_seconds', 0):.0f} s of audio",
                    jaxslm=f"{best['audio_seconds_per_second']:,.0f} audio s/s ({best['name']}); "
                    f"first pass {cold:.1f} s cold"
                    + (f", {warm:.1f} s warm" if warm is not None else "")
                    + f"; units agree {best['agreement']:.2%}"
                    + traced(run),
                    torch=f"{torch_best['audio_seconds_per_second']:,.0f} audio s/s "
                    f"({torch_best['name']})",
                    ratio=f"{ratio:.2f}x",
                    target="units equal on 100% of frames"
                    if float32
                    else f">= {TOKENIZER_TARGET}x, cold first pass < {TOKENIZER_COLD_S:.0f} s",
                    result="; ".join(verdicts),
                )
            )
        return rows


def traced(measured: dict) -> str:
    """What a --profile trace of one jaxslm call found, as the end of a table cell."""
    profile = measured.get("profile")
    if not profile or "error" in profile:
        return ""
    copies = profile["copies"]
    return (
        f"; trace: {profile['device_ms']:.1f} device ms in {profile['wall_s'] * 1e3:.1f} ms, "
        f"{copies['device_to_host']} device->host copies"
    )


def percent(value) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "n/a"


def figure(measured: dict) -> str:
    """tokens/s, MFU and peak memory of one measurement, as a table cell."""
    text = f"{measured['tokens_per_second']:,.0f} tok/s"
    mfu = measured.get("mfu")
    text += f", MFU {mfu:.1%}" if isinstance(mfu, int | float) else ", MFU n/a"
    if measured.get("peak_bytes"):
        text += f", {measured['peak_bytes'] / 2**30:.1f} GiB"
    return text


def verdict(name: str, value, ok: bool) -> str:
    """`name: pass|fail`, or `name: n/a` when the value could not be measured."""
    return f"{name}: {'n/a' if value is None else 'pass' if ok else 'fail'}"


def read_metrics(path: Path) -> list[dict]:
    """The complete JSON lines of a metrics.jsonl that may still be being written."""
    records = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


# ---- the stages' own processes ---------------------------------------------------------


def internal_env(json_path: Path) -> None:
    """Print and write the versions, devices and missing packages."""
    info: dict = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    versions = {}
    for name in DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    info["versions"] = versions
    protobuf = tuple(int(p) for p in versions.get("protobuf", "").split(".")[:3] if p.isdigit())
    if protobuf and protobuf < (6, 31, 1):
        info["warning"] = (
            f"protobuf {versions['protobuf']} < 6.31.1: tensorflow-metadata's generated code "
            "(imported by tensorflow-datasets) refuses it, so the trainer stage will fail; "
            "carry a newer protobuf wheel (benchmarks/gpu_wheels.sh)"
        )
    missing = missing_modules(CHECKED_MODULES)
    info["missing"] = {name: CHECKED_MODULES[name] for name in missing}
    info["import_errors"] = {}
    for name, module in IMPORT_CHECKS.items():
        if name not in missing:
            try:
                importlib.import_module(module)
            except Exception as error:  # reported; the stages that need it will fail
                info["import_errors"][name] = f"import {module}: {type(error).__name__}: {error}"
    unusable = {*missing, *info["import_errors"]}
    info["blocked_stages"] = {
        stage: blocked
        for stage, needs in STAGE_NEEDS.items()
        if (blocked := [name for name in needs if name in unusable])
    }
    try:
        import jax

        devices = jax.devices()
        info.update(
            backend=jax.default_backend(),
            devices=[str(d) for d in devices],
            device_count=len(devices),
            device_kind=devices[0].device_kind,
        )
        info["cuda_versions"] = jax_cuda_versions()
        from jaxslm.scaling.flops import peak_flops_per_device

        info["bf16_peak_flops"] = peak_flops_per_device(devices[0].device_kind, "bfloat16")
    except Exception as error:  # report, and go on to torch and nvidia-smi
        info["jax_error"] = f"{type(error).__name__}: {error}"
    try:
        import torch

        info["torch_cuda"] = torch.cuda.is_available()
        info["torch_cuda_version"] = torch.version.cuda
        info["torch_cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
        info["gpu_name"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception as error:
        info["torch_error"] = f"{type(error).__name__}: {error}"
    if shutil.which("nvidia-smi"):
        try:
            smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=15)
            info["nvidia_smi"] = smi.stdout + smi.stderr
        except (OSError, subprocess.TimeoutExpired) as error:
            info["nvidia_smi"] = f"failed: {error}"
    for key, value in info.items():
        if key not in ("nvidia_smi", "versions", "missing", "import_errors", "blocked_stages"):
            print(f"{key}: {value}")
    for name, version in versions.items():
        print(f"version {name}: {version}")
    for name, needed_by in info["missing"].items():
        print(f"missing {name}: needed by {needed_by}")
    for name, error in info["import_errors"].items():
        print(f"broken {name}: {error}")
    for stage, blocked in info["blocked_stages"].items():
        print(f"stage {stage} is blocked: missing or broken {', '.join(blocked)}")
    if not unusable:
        print("no needed package is missing or broken")
    print(info.get("nvidia_smi", "nvidia-smi: not found"))
    json_path.write_text(json.dumps(info, indent=1, default=str))


def jax_cuda_versions() -> dict[str, int]:
    """CUDA runtime, driver, cuDNN, ... versions as JAX's CUDA plugin reports them ({} on
    a CPU or where this JAX keeps them elsewhere)."""
    try:
        from jax._src.lib import cuda_versions
    except ImportError:
        return {}
    if cuda_versions is None:
        return {}
    found = {}
    for name in sorted(dir(cuda_versions)):
        if name.endswith("_get_version"):
            try:
                found[name.removesuffix("_get_version")] = getattr(cuda_versions, name)()
            except Exception as error:  # one unreadable version must not hide the others
                found[name.removesuffix("_get_version")] = f"error: {error}"
    return found


def internal_prepare_trainer(work: Path, preset: str, num_units: int) -> None:
    """The trainer's inputs: a byte-level HF tokenizer of exactly the preset's tokenizer length
    (BOS and EOS, the 256 byte symbols, then filler entries, as Llama 3's size) and the
    built-in synthetic corpus with `num_units` speech units."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from jaxslm.data.synthetic import SyntheticConfig
    from jaxslm.data.synthetic_corpus import build_synthetic
    from jaxslm.models.presets import get_preset
    from jaxslm.text_tokenizer import load_text_tokenizer

    start = time.perf_counter()
    tokenizer_size = get_preset(preset).tokenizer_size
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    vocab = {bos: 0, eos: 1}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    vocab.update({f"<|filler_{i}|>": i for i in range(len(vocab), tokenizer_size)})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([bos, eos])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, 0)]
    )
    directory = work / "tokenizer"
    remove(directory)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos)
    fast.save_pretrained(str(directory))
    loaded = load_text_tokenizer(directory)
    if len(loaded) != tokenizer_size or loaded.bos_id != 0 or loaded.eos_id != 1:
        raise SystemExit(
            f"the generated tokenizer has {len(loaded)} entries, BOS {loaded.bos_id}, EOS "
            f"{loaded.eos_id}; expected {tokenizer_size}, 0, 1"
        )
    print(f"tokenizer: {len(loaded)} entries in {directory} ({time.perf_counter() - start:.1f} s)")
    start = time.perf_counter()
    corpus = work / "corpus"
    remove(corpus)
    build_synthetic(corpus, SyntheticConfig(num_units=num_units))
    print(f"corpus: built-in, {num_units} units, in {corpus} ({time.perf_counter() - start:.1f} s)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        default=os.environ.get("OUT") or "gpu_check_out",
        help="logs and the summary (default: $OUT when set, else gpu_check_out/)",
    )
    parser.add_argument(
        "--work",
        default="/tmp/jaxslm_gpu_check",
        help="corpus, tokenizer, trainer run and stage JSON (default: /tmp/jaxslm_gpu_check)",
    )
    parser.add_argument(
        "--suite",
        choices=SUITES,
        default="training",
        help="training (default): "
        + ",".join(SUITES["training"])
        + "; inference: "
        + ",".join(SUITES["inference"]),
    )
    parser.add_argument(
        "--stages",
        default=None,
        help="comma-separated subset of the suite's stages, run in the suite's order (default: "
        "all of them)",
    )
    parser.add_argument("--small", action="store_true", help="tiny shapes, to test on a CPU")
    parser.add_argument("--cap-scale", type=float, default=1.0, help="multiply every cap by F")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for all stages (training "
        + ", inference ".join(str(BUDGETS[s]) for s in SUITES)
        + ")",
    )
    parser.add_argument(
        "--remats",
        default="none,save_projections",
        help="train_step_jaxslm's remat policies, in order (default: none,save_projections)",
    )
    parser.add_argument("--trainer-steps", type=int, default=None, help="30 (small: 12)")
    parser.add_argument(
        "--trainer-remat",
        default="auto",
        help="model.remat of the trainer stage (auto: the fastest train_step_jaxslm policy)",
    )
    parser.add_argument(
        "--checkpoint-grace",
        type=float,
        default=30.0,
        help="seconds the trainer's final checkpoint save may take before it is cut (30)",
    )
    parser.add_argument("--internal", choices=["env", "prepare-trainer"], help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--num-units", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    suite = SUITES[args.suite]
    chosen = ",".join(suite) if args.stages is None else args.stages
    args.stages = [s.strip() for s in chosen.split(",") if s.strip()]
    unknown = [s for s in args.stages if s not in suite]
    if unknown:
        parser.error(
            f"unknown stage(s) {', '.join(unknown)} in the {args.suite} suite; choose from "
            f"{', '.join(suite)}"
        )
    args.stages = [s for s in suite if s in args.stages]
    if args.budget is None:
        args.budget = BUDGETS[args.suite]
    args.remats = [r.strip() for r in args.remats.split(",") if r.strip()]
    if args.trainer_steps is None:
        args.trainer_steps = 12 if args.small else 30
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.internal == "env":
        internal_env(args.json)
        return 0
    if args.internal == "prepare-trainer":
        internal_prepare_trainer(Path(args.work), args.preset, args.num_units)
        return 0
    Check(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
