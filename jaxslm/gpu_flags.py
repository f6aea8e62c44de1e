"""XLA flags for training on NVIDIA GPUs, added to XLA_FLAGS before JAX starts its backend.

XLA reads XLA_FLAGS once, when the first backend starts, and aborts the process on a flag it
does not know; so the list holds only flags that jaxlib's parser accepts (tested against the
installed jaxlib) and the trainer adds them before anything touches a device. A flag already
in XLA_FLAGS keeps the user's value, and `JAXSLM_GPU_FLAGS=0` adds none.

- `xla_gpu_enable_latency_hiding_scheduler`: schedules collectives (the gradient all-reduce,
  FSDP's all-gathers) to overlap with compute; NVIDIA's JAX containers set it too.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import MutableMapping

GPU_FLAGS = {"xla_gpu_enable_latency_hiding_scheduler": "true"}
_CUDA_PJRT = re.compile(r"jax[-_.]cuda\d+[-_.]pjrt", re.IGNORECASE)


def cuda_plugin_installed() -> bool:
    """Whether a JAX CUDA PJRT plugin (`jax-cudaNN-pjrt`) is installed."""
    return any(
        _CUDA_PJRT.fullmatch(dist.metadata["Name"] or "")
        for dist in importlib.metadata.distributions()
    )


def add_gpu_flags(
    environ: MutableMapping[str, str] = os.environ, cuda: bool | None = None
) -> list[str]:
    """Append GPU_FLAGS missing from `environ["XLA_FLAGS"]` when JAX will run on a CUDA GPU
    (`cuda`: None detects the plugin) and JAX_PLATFORMS allows it; returns the flags added."""
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
        for name, value in GPU_FLAGS.items()
        if not re.search(rf"--{name}(=|\s|$)", present)
    ]
    if added:
        environ["XLA_FLAGS"] = " ".join([present, *added]).strip()
    return added
