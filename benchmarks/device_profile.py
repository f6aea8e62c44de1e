"""Where one call's device time goes, and compilation with the persistent cache cold and warm:
helpers of the inference benchmarks (evaluate.py, generate.py, tokenize_audio.py).

Benchmarks run as scripts (`python benchmarks/NAME.py`), so they import this module as
`device_profile` from their own folder.

- `trace_call(run, directory)` runs `run()` once under `jax.profiler.trace` (the trace stays
  in `directory`) and reads the trace back with `jax.profiler.ProfileData`: device time per
  XLA op (kernels on a GPU; XLA:CPU's thunks on a CPU), per program, the number of
  device-to-host and host-to-device copies (on a GPU each `while_loop` iteration whose trip
  count XLA does not know copies its predicate to the host), and the call's wall time.
- `fresh_compile_cache(directory)` points JAX's persistent compilation cache at an empty
  folder with the command-line settings (jaxslm.compile_cache): what compiles next is cold,
  and after `jax.clear_caches()` the same programs load from that folder (warm).
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

from jaxslm.compile_cache import enable_compilation_cache


def add_device_options(parser: argparse.ArgumentParser, cached: str, traced: str) -> None:
    """--compile-cache DIR (first `cached` with an empty, then a filled persistent compilation
    cache), --profile DIR (trace `traced`) and --json PATH, the inference benchmarks' options."""
    parser.add_argument(
        "--compile-cache",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"time {cached} with an empty persistent compilation cache in DIR (cold), then "
        "with the programs it stored (warm)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"trace {traced} into DIR and print its top device ops and device<->host copies",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write JSON")


def fresh_compile_cache(directory: Path) -> Path:
    """Empty `directory` and make it JAX's persistent compilation cache for what follows."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    enable_compilation_cache()  # the CLIs' size limit and minimum compile time
    compilation_cache.set_cache_dir(str(directory))
    compilation_cache.reset_cache()
    return directory


def cache_entries(directory: Path | None) -> int:
    """Programs stored in a persistent cache folder (0 for None)."""
    return 0 if directory is None else len(list(directory.glob("*-cache")))


def trace_call(run: Callable[[], object], directory: Path, top: int = 12) -> dict:
    """Profile one call of `run` (its outputs waited for); a summary dict, or one whose
    `error` says why there is none (a profiler that cannot start must not stop a benchmark)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    try:
        with jax.profiler.trace(str(directory)):
            start = time.perf_counter()
            jax.block_until_ready(run())
            wall = time.perf_counter() - start
        files = sorted(directory.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
        if not files:
            return {"error": f"no .xplane.pb written under {directory}", "wall_s": wall}
        summary = summarize_trace(files[-1], top)
    except Exception as error:  # noqa: BLE001 - reported, the benchmark goes on
        return {"error": f"{type(error).__name__}: {error}"}
    return {"wall_s": wall, **summary}


def summarize_trace(path: Path, top: int) -> dict:
    """Device time per op and per program, and copy counts, of one `.xplane.pb` trace."""
    from jax.profiler import ProfileData

    data = ProfileData.from_file(str(path))
    devices = [plane for plane in data.planes if plane.name.startswith("/device:")]
    per_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    per_module: dict[str, float] = defaultdict(float)
    copies = {"device_to_host": 0, "host_to_device": 0}
    for plane in devices or [data.find_plane_with_name("/host:CPU")]:
        if plane is None:
            continue
        lines = list(plane.lines)
        streams = [line for line in lines if line.name.startswith("Stream")]
        for line in streams or lines:
            for event in line.events:
                stats = dict(event.stats)
                if not devices and "hlo_op" not in stats:
                    continue  # host plane: only XLA:CPU's op events
                name = str(stats.get("hlo_op") or event.name)
                lowered = event.name.lower()
                if "memcpy" in lowered or ("copy" in lowered and "host" in lowered):
                    if "dtoh" in lowered or "d2h" in lowered or "devicetohost" in lowered:
                        copies["device_to_host"] += 1
                    elif "htod" in lowered or "h2d" in lowered or "hosttodevice" in lowered:
                        copies["host_to_device"] += 1
                per_op[name][0] += event.duration_ns / 1e6
                per_op[name][1] += 1
                if stats.get("hlo_module"):
                    per_module[str(stats["hlo_module"])] += event.duration_ns / 1e6
    ranked = sorted(per_op.items(), key=lambda item: -item[1][0])
    return {
        "trace": str(path),
        "trace_bytes": path.stat().st_size,
        "planes": [plane.name for plane in data.planes],
        "device_ms": sum(ms for ms, _ in per_op.values()),
        "events": sum(count for _, count in per_op.values()),
        "copies": copies,
        "top_ops": [{"op": name, "ms": ms, "count": count} for name, (ms, count) in ranked[:top]],
        "modules_ms": dict(sorted(per_module.items(), key=lambda item: -item[1])[:top]),
    }


def print_trace(label: str, summary: dict) -> None:
    """The summary as a few lines of the benchmark's output."""
    if "error" in summary:
        print(f"profile of {label}: not available ({summary['error']})")
        return
    copies = summary["copies"]
    print(
        f"profile of {label}: wall {1e3 * summary['wall_s']:.1f} ms, device ops "
        f"{summary['device_ms']:.1f} ms in {summary['events']} events, copies device->host "
        f"{copies['device_to_host']}, host->device {copies['host_to_device']} "
        f"(trace {summary['trace']}, {summary['trace_bytes'] / 2**20:.1f} MiB)"
    )
    for row in summary["top_ops"]:
        print(f"    {row['ms']:9.2f} ms {row['count']:7d} x  {row['op'][:100]}")
    for module, ms in summary["modules_ms"].items():
        print(f"    program {module[:80]}: {ms:.2f} ms")
