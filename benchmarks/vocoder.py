"""Seconds of audio vocoded per second: jaxslm's unit HiFi-GAN beside PyTorch's.

Both sides turn the same unit sequences into waves with the same random weights, in one
invocation, and their waves are compared before timing.

  jaxslm  `UnitVocoder.vocode(units)`: the duration predictor over bucketed batches, then the
          generator over bucketed batches of the repeated units (lengths rounded up to 16
          frames x 1, 1.5, 2, 3, 4, ...; rows to a power of two within --batch-frames), each
          utterance exactly as if alone; jitted, float32.
  torch   transformers' SeamlessM4TCodeHifiGan holding the same weights (the oracle of
          tests/test_vocoder.py; see tests/vocoder_oracle.py for why it is the same network),
          one utterance at a time as slamkit's CodeHiFiGANVocoder is called, under
          torch.no_grad(), float32, torch's default CPU threads.

Shape: the weights are random in textless's checkpoint layout, shaped like a 25 Hz unit
HiFi-GAN (500 units, 128-dim embedding, duration predictor of width 128, upsample rates
5,4,4,4,2 = 640 samples per frame with kernels 11,8,8,8,4, 512 initial channels, residual
kernels 3,7,11 with dilations 1,3,5: HiFi-GAN V1's generator at 16 kHz / 25 Hz); `tiny` is the
tests' small vocoder, for quick runs. Units: random ids, utterances of --min-units to
--max-units (uniform), --utterances of them.

    python benchmarks/vocoder.py [--shape v1|tiny] [--utterances 8] [--min-units 25]
        [--max-units 100] [--repeat 3]

Timing: one untimed pass of each side first (jaxslm compiles its bucket shapes there), then
--repeat passes, alternating sides; each rate is the median over the repeats of audio seconds
/ seconds of one whole pass (host work included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from vocoder_oracle import (  # noqa: E402
    SeamlessOracle,
    random_state_dict,
    textless_config,
    write_vocoder,
)

from jaxslm.speech.vocoder import UnitVocoder  # noqa: E402

V1 = {
    "upsample_rates": [5, 4, 4, 4, 2],
    "upsample_kernel_sizes": [11, 8, 8, 8, 4],
    "upsample_initial_channel": 512,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5]] * 3,
}


def _config(shape: str) -> dict:
    if shape == "tiny":
        return textless_config(500, duration=True)
    return textless_config(500, duration=True, embed=128) | V1


def _rate(seconds: list[float], audio_seconds: float) -> float:
    return audio_seconds / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("v1", "tiny"), default="v1")
    parser.add_argument("--utterances", type=int, default=8)
    parser.add_argument("--min-units", type=int, default=25)
    parser.add_argument("--max-units", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import torch

    cfg = _config(args.shape)
    sd = random_state_dict(cfg, seed=0)
    with tempfile.TemporaryDirectory() as scratch:
        write_vocoder(Path(scratch) / "vocoder", cfg, sd)
        jax_vocoder = UnitVocoder.load(Path(scratch) / "vocoder")
    oracle = SeamlessOracle(cfg, sd)
    rng = np.random.default_rng(0)
    lengths = rng.integers(args.min_units, args.max_units + 1, args.utterances)
    units = [rng.integers(0, 500, n) for n in lengths]

    def run_jax():
        return jax_vocoder.vocode(units)

    def run_torch():
        return [oracle.wave(u) for u in units]

    start = time.perf_counter()
    jax_waves = run_jax()
    first_jax = time.perf_counter() - start
    torch_waves = run_torch()
    worst = max(float(np.abs(a - b).max()) for a, b in zip(jax_waves, torch_waves, strict=True))
    audio_seconds = sum(w.size for w in torch_waves) / 16000
    timings = {"jaxslm": [], "torch": []}
    for _ in range(args.repeat):
        for side, run in (("jaxslm", run_jax), ("torch", run_torch)):
            start = time.perf_counter()
            run()
            timings[side].append(time.perf_counter() - start)
    rates = {side: _rate(seconds, audio_seconds) for side, seconds in timings.items()}
    print(
        f"shape {args.shape}: {args.utterances} utterances, {int(lengths.sum())} units, "
        f"{audio_seconds:.1f} s of audio; torch threads {torch.get_num_threads()}"
    )
    print(f"max |jaxslm - torch| over the waves: {worst:.2e}")
    print(f"jaxslm first pass (compiles): {first_jax:.1f} s")
    print(f"| side | audio s / s (median of {args.repeat}) |")
    print("|---|---|")
    for side, rate in rates.items():
        print(f"| {side} | {rate:.2f} |")
    print(f"speed-up jaxslm / torch: {rates['jaxslm'] / rates['torch']:.2f}x")


if __name__ == "__main__":
    main()
