"""Every choice that depends on the accelerator, made in one place.

- Which attention kernel runs (`attention_kernel`): `model.attention` is `auto`, `xla`,
  `cudnn`, `pallas` or `splash`; `auto` takes the first kernel of AUTO_KERNELS[platform] that
  can serve the call. A kernel that cannot serve a call (the scorer's trunk/branch rule, a
  length its tiles do not divide, float32 for cuDNN) is not chosen for it: `auto` moves on,
  and an explicit choice falls back to `xla` for that call with a warning. A kernel asked for
  on a platform that cannot run it at all is an error. On the CPU, `pallas` and `splash` run
  in Pallas's interpret mode: exact and slow, for tests.
- How many tokens one scored batch holds, and how large a slice of float32 logits may grow.
- Where a model loaded without a mesh computes (`compute_device`): JAX's default device, the
  accelerator when there is one.
- How inference runs its loops and buckets (`decode_layers`, `decode_check_every`,
  `hubert_bucket_seconds`): each
  has an environment variable that overrides it, so that the GPU check
  (benchmarks/gpu_check.py --suite inference) can time the alternatives.
- The XLA flags for NVIDIA GPUs (`prepare_process`), added to XLA_FLAGS before JAX starts its
  backend, by every command-line entry point.

CPU choices (query chunks of 128 in the XLA attention, 1024-token scoring batches) were tuned
on a 2-core CPU VM; nothing here lets them decide what a GPU or TPU runs. GPU and TPU values
that no measurement has chosen yet say so.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import warnings
from collections.abc import MutableMapping

import jax
import jax.numpy as jnp

from jaxslm.errors import JaxslmError

ATTENTION_KERNELS = ("auto", "xla", "cudnn", "pallas", "splash")
# Where each fused kernel runs natively; on the CPU, Pallas kernels run interpreted.
KERNEL_PLATFORMS = {"cudnn": ("gpu",), "pallas": ("gpu", "cpu"), "splash": ("tpu", "cpu")}
AUTO_KERNELS = {"gpu": ("cudnn", "xla"), "tpu": ("splash", "xla"), "cpu": ("xla",)}
# The XLA flags for NVIDIA GPUs. XLA aborts the process on a flag it does not know, so the
# list holds only flags that jaxlib's parser accepts (tested against the installed jaxlib).
# - latency hiding scheduler: collectives (the gradient all-reduce, FSDP's all-gathers)
#   overlap with compute; NVIDIA's JAX containers set it too.
GPU_XLA_FLAGS = {"xla_gpu_enable_latency_hiding_scheduler": "true"}
_CUDA_PJRT = re.compile(r"jax[-_.]cuda\d+[-_.]pjrt", re.IGNORECASE)


# model.dtype `auto`: the compute dtype of each platform (float32 master parameters either way)
COMPUTE_DTYPE = {"cpu": "float32", "gpu": "bfloat16", "tpu": "bfloat16"}


def compute_dtype() -> str:
    """The compute dtype `model.dtype: auto` stands for here."""
    return COMPUTE_DTYPE[platform()]


def platform() -> str:
    """`cpu`, `gpu` or `tpu`: the platform jitted code runs on."""
    name = jax.default_backend()
    return "gpu" if name in ("cuda", "rocm") else name


def attention_kernel(
    requested: str,
    *,
    dtype: jnp.dtype,
    head_dim: int,
    length: int,
    branches: bool,
    on: str | None = None,
) -> str:
    """The kernel that runs one attention call of `length` query and key positions.

    `branches`: the call carries the scorer's branch ids (trunk/branch visibility), which
    only the XLA and cuDNN kernels (through a dense mask) can honour. `on` overrides the
    platform (for tests).
    """
    on = on or platform()
    if requested not in ATTENTION_KERNELS:
        raise JaxslmError(
            f"model.attention={requested!r} is not one of {ATTENTION_KERNELS}; use auto to let "
            "jaxslm choose per device"
        )
    if requested != "auto" and requested != "xla" and on not in KERNEL_PLATFORMS[requested]:
        raise JaxslmError(
            f"model.attention={requested} cannot run on {on} (it runs on "
            f"{' or '.join(KERNEL_PLATFORMS[requested])}); set model.attention=auto or xla"
        )
    candidates = AUTO_KERNELS.get(on, ("xla",)) if requested == "auto" else (requested, "xla")
    for kernel in candidates:
        reason = _cannot_serve(kernel, jnp.dtype(dtype), head_dim, length, branches)
        if reason is None:
            return kernel
        if kernel == requested:
            warnings.warn(
                f"model.attention={requested} {reason}: this call runs the xla kernel",
                stacklevel=2,
            )
    return "xla"


def _cannot_serve(kernel: str, dtype, head_dim: int, length: int, branches: bool) -> str | None:
    """Why `kernel` cannot run a call, or None."""
    if kernel == "cudnn":
        if dtype not in (jnp.bfloat16, jnp.float16):
            return f"needs bfloat16 or float16 compute, not {dtype}"
        if head_dim % 8 or head_dim > 128:
            return f"needs a head_dim that is a multiple of 8 up to 128, not {head_dim}"
        if length % 2:
            return f"needs an even length, not {length}"
    elif kernel in ("pallas", "splash"):
        if branches:
            return "cannot honour the scorer's trunk/branch visibility"
        tile = 16 if kernel == "pallas" else 128
        if length % tile:
            return f"needs a length that is a multiple of {tile}, not {length}"
    return None


def pallas_interpret() -> bool:
    """Whether Pallas kernels run in interpret mode (on the CPU)."""
    return platform() == "cpu"


def scorer_batch_tokens() -> int:
    """Tokens per scored batch: 1024 on CPUs (fastest of 1024, 2048 and 8192 in
    benchmarks/evaluate.py on every task, 2-core CPU VM), 16384 elsewhere."""
    return 1024 if platform() == "cpu" else 16384


def logits_bytes() -> int:
    """The most bytes of float32 logits computed at once, by the trainer's loss and the
    scorer (the rest of the sequence waits its turn in the chunked head)."""
    return 1 << 30


def compute_device() -> jax.Device:
    """The device a model loaded without a mesh lives and computes on: JAX's default device
    (`jax.default_device`, JAX_DEFAULT_DEVICE / jax_default_device), else the first device of
    the default backend. Never the host CPU on a GPU machine unless asked for."""
    chosen = jax.config.jax_default_device
    if chosen is None:
        return jax.devices()[0]
    return jax.devices(chosen)[0] if isinstance(chosen, str) else chosen


# The layer loop of generation's decoding steps: `scan` compiles one layer and loops over the
# stacked parameters (a loop with a known trip count: no host round trip on GPUs either);
# `unrolled` compiles every layer in line (larger program, longer compilation; XLA may fuse
# across layers and read each layer's weights in place); `split` also compiles every layer in
# line, over a copy of the weights cut into one array per layer when the Generator is made
# and one KV cache per layer, attended whole: no step copies a slice of a stacked array
# (a scanned step copies every layer's weights and cache window where a matmul cannot read a
# slice in place: benchmarks/RESULTS.md), at the price of a second copy of the layers'
# weights. CPU: scan, today's behaviour (benchmarks/RESULTS.md, issue 21). GPU and TPU: scan,
# not yet measured against the other two.
DECODE_LAYERS = ("scan", "unrolled", "split")
DECODE_LAYERS_DEFAULT = {"cpu": "scan", "gpu": "scan", "tpu": "scan"}
# How many tokens generation decodes between two looks at whether every row is done. XLA's
# GPU runtime runs a `while` loop whose trip count depends on the data by copying its
# predicate to the host and blocking the stream before every iteration (WhileThunk in
# openxla/xla's xla/backends/gpu/runtime/while_thunk.cc); a loop with a known trip count
# runs with no such round trip. Decoding N tokens per check turns N round trips into one, at
# the price of up to N - 1 steps computed after the last row is done. CPU: 1 (the loop runs
# on the host anyway; no round trip to save). TPU: 1 (loops run on the device). GPU: 8, from
# that source, not yet measured (the GPU check times 1 and 8).
DECODE_CHECK_EVERY = {"cpu": 1, "gpu": 8, "tpu": 1}
# HuBERT input lengths are padded to this many seconds x 1, 2, 3, 4, 6, 8, 12, ...
# (jaxslm.speech.hubert_features). CPU: 0.5 s, little padding, and compiling one more shape
# takes about a second there. GPU and TPU: 0.5 s, not yet measured against coarser buckets
# (the GPU check times 0.5 and 16 s: compilation dominated the first GPU measurement, 37 s to
# tokenize 121 s of audio in 4 shapes, and 16 s puts 2-16 s utterances in one shape, at the
# price of padding short ones; benchmarks/tokenize_audio.py --bucket-seconds).
HUBERT_BUCKET_SECONDS = {"cpu": 0.5, "gpu": 0.5, "tpu": 0.5}


def decode_layers() -> str:
    """`scan`, `unrolled` or `split`: how decoding steps run the layers (DECODE_LAYERS_DEFAULT per
    platform); the environment variable JAXSLM_DECODE_LAYERS overrides it."""
    value = os.environ.get("JAXSLM_DECODE_LAYERS") or DECODE_LAYERS_DEFAULT.get(platform(), "scan")
    if value not in DECODE_LAYERS:
        raise JaxslmError(
            f"JAXSLM_DECODE_LAYERS={value!r} is not one of {DECODE_LAYERS}; unset it to let "
            "jaxslm choose per device"
        )
    return value


def decode_check_every() -> int:
    """Tokens decoded between two checks for the end of generation (DECODE_CHECK_EVERY per
    platform); the environment variable JAXSLM_DECODE_CHECK_EVERY overrides it."""
    text = os.environ.get("JAXSLM_DECODE_CHECK_EVERY")
    if not text:
        return DECODE_CHECK_EVERY.get(platform(), 1)
    if not (text.isdigit() and 1 <= int(text) <= 256):
        raise JaxslmError(
            f"JAXSLM_DECODE_CHECK_EVERY={text!r} is not a whole number of tokens from 1 to 256; "
            "unset it to let jaxslm choose per device"
        )
    return int(text)


def hubert_bucket_seconds() -> float:
    """Seconds of the smallest HuBERT length bucket (HUBERT_BUCKET_SECONDS per platform); the
    environment variable JAXSLM_HUBERT_BUCKET_SECONDS overrides it."""
    text = os.environ.get("JAXSLM_HUBERT_BUCKET_SECONDS")
    if not text:
        return HUBERT_BUCKET_SECONDS.get(platform(), 0.5)
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise JaxslmError(
            f"JAXSLM_HUBERT_BUCKET_SECONDS={text!r} is not a positive number of seconds; unset "
            "it to let jaxslm choose per device"
        )
    return value


def cuda_plugin_installed() -> bool:
    """Whether a JAX CUDA PJRT plugin (`jax-cudaNN-pjrt`) is installed."""
    return any(
        _CUDA_PJRT.fullmatch(dist.metadata["Name"] or "")
        for dist in importlib.metadata.distributions()
    )


def add_gpu_flags(
    environ: MutableMapping[str, str] = os.environ, cuda: bool | None = None
) -> list[str]:
    """Append GPU_XLA_FLAGS missing from `environ["XLA_FLAGS"]` when JAX will run on a CUDA
    GPU (`cuda`: None detects the plugin) and JAX_PLATFORMS allows it; returns the flags added.
    A flag already in XLA_FLAGS keeps the user's value; `JAXSLM_GPU_FLAGS=0` adds none."""
    if environ.get("JAXSLM_GPU_FLAGS", "1") == "0":
        return []
    platforms = environ.get("JAX_PLATFORMS", "")
    if platforms and not {"cuda", "gpu"} & set(platforms.split(",")):
        return []
    if not (cuda_plugin_installed() if cuda is None else cuda):
        return []
    present = environ.get("XLA_FLAGS", "")
    added = [
        f"--{name}={value}"
        for name, value in GPU_XLA_FLAGS.items()
        if not re.search(rf"--{name}(=|\s|$)", present)
    ]
    if added:
        environ["XLA_FLAGS"] = " ".join([present, *added]).strip()
    return added


def prepare_process() -> None:
    """What every command-line entry point does before JAX touches a device: the GPU XLA
    flags, the persistent compilation cache (jaxslm.compile_cache), and jaxslm's warnings
    printed as `warning: MESSAGE` (jaxslm.cli_warnings)."""
    from jaxslm.cli_warnings import plain_jaxslm_warnings
    from jaxslm.compile_cache import enable_compilation_cache

    add_gpu_flags()
    enable_compilation_cache()
    plain_jaxslm_warnings()
