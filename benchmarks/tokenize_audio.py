"""Seconds of audio tokenized per second: jaxslm's SpeechTokenizer beside slamkit's HuBERT path.

Both sides turn the same waves into deduplicated units with the same HuBERT weights and the
same k-means codebook, in one invocation, and their unit ids are compared before timing.

  jaxslm  `SpeechTokenizer.units(waves)`: HubertFeatures pads each wave with 40 zero samples
          on both sides, sorts by length, groups the waves into bucketed shapes (lengths
          rounded up to 0.5 s x 1, 2, 3, 4, 6, 8, 12, ...; rows to a power of two within
          --batch-seconds of padded audio) and runs one jitted encoder call per group, only up
          to --layer, each utterance exactly as if alone; then `assign` (jitted
          ||c||^2 - 2 x.c argmin, 8192 frames per call) over every frame and `dedup` per
          utterance. Several --batch-seconds are timed; the table marks the fastest.
  torch   slamkit's HubertFeatureExtractor.extract: waves in input order, --torch-batch at a
          time, right-padded with zeros to the longest of the batch, then
          `model(F.pad(wav, (40, 40)), output_hidden_states=True).hidden_states[layer]`
          (transformers HubertModel, eval mode, torch.inference_mode(), no attention mask);
          the nearest centroid of every frame by the same matmul form
          (argmin ||c||^2 - 2 x.c, torch on the model's device); frames trimmed to
          ceil(len / max_len * T) per wave and deduplicated. slamkit itself assigns with
          sklearn's MiniBatchKMeans.predict on the CPU: --sklearn times that variant too
          (--breakdown times both assignments alone).

Weights: one random transformers HubertModel of --shape (every parameter and the positional
BatchNorm's running statistics random) saved to a temporary directory; jaxslm imports it with
`load_hubert`, torch uses the model object itself. Codebook: --units random N(0, 1) centroids
of the hidden width, written as .npy and read with `load_codebook`. Audio: random utterances of
--min-seconds to --max-seconds (uniform; LibriSpeech-like), a tone with a wandering pitch,
amplitude modulation and noise, --seconds in total.

Shapes: `mhubert` is mHuBERT-25Hz (slprl/mhubert-base-25hz: HuBERT-base, hidden 768, 12 layers,
8 convs with strides 5,2,2,2,2,2,2,2 and kernels 10,3,3,3,3,2,2,2, BatchNorm before the
positional conv, 25 frames/s), layer 11 by default; `tiny` is a small model of the same layout
for quick runs (layer 2).

    python benchmarks/tokenize_audio.py [--shape mhubert|tiny] [--layer 11] [--seconds 120]
        [--torch-batch 8,1] [--batch-seconds 120,30] [--bucket-seconds 0.5,16] [--repeat 3]
        [--side both|jaxslm|torch] [--dtype float32|bfloat16|float16] [--sklearn] [--breakdown]
        [--compile-cache DIR] [--profile DIR] [--json PATH]

--seconds defaults to 120 s of audio on a CPU and 300 s on a GPU. --bucket-seconds times
jaxslm with other smallest length buckets than the device's (jaxslm.backend.
hubert_bucket_seconds: 0.5 s): fewer shapes to compile against more padding.

Agreement: the fraction of frames (before dedup) whose unit id equals torch's at batch 1 (each
wave alone, the unpadded reference); a frame missing on one side counts as a disagreement.
Timing: one untimed pass of each configuration first (for jaxslm it compiles every bucket
shape, after jax.clear_caches() so that each configuration pays its own compilation; compile
seconds are JAX's trace + lower + backend-compile durations during that pass; with
--compile-cache DIR that pass runs with an empty persistent compilation cache in DIR (cold, as
a first run of the CLI), then once more after jax.clear_caches(), its programs loaded from DIR
(warm, as every later run), and both passes' seconds are reported; one more untimed pass of
each jaxslm configuration then recompiles what a later clear dropped),
then --repeat passes of every configuration, interleaved so that a change of load on a shared
machine hits all of them; each rate is the median over the repeats of audio seconds / seconds
of one whole pass, host work (padding, copies, trimming, dedup) included on both sides.
"padding" is computed samples / real samples: encoder input including the 40-sample pads,
bucket rounding, empty rows (jaxslm) and right-padding to the longest wave of a batch (torch).
--breakdown also times the stages of jaxslm (first --batch-seconds; cumulative: conv 1, its
GroupNorm, the conv stack, the input states, the transformer layers; assign; dedup) and of
torch at batch 1, interleaved in rounds as well.

What still differs:
- torch runs all 12 transformer layers (output_hidden_states, as slamkit) and keeps
  hidden_states[layer]; jaxslm runs only the first `layer` layers.
- torch at batch > 1 computes padded waves without an attention mask, as slamkit does: the
  padding changes the first conv's GroupNorm statistics and is attended to, so its units differ
  from those of each wave alone (its agreement column shows by how much). jaxslm's batches give
  every wave exactly its lone result.
- the codebook is random, not fitted to the features: near-ties, where float rounding can flip
  a unit, may be rarer than with a real k-means codebook, so real agreement may be lower.
- dtype: float32 on the CPU. With --dtype bfloat16 (default on CUDA) torch runs under autocast
  and jaxslm with bfloat16 parameters and compute; float16 is torch-only (jaxslm then runs
  bfloat16).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from compile_clock import CompileClock
from device_profile import (
    add_device_options,
    cache_entries,
    fresh_compile_cache,
    print_trace,
    trace_call,
)
from flax import nnx
from transformers import HubertConfig, HubertModel

from jaxslm.data.records import dedup
from jaxslm.hf.hubert_import import load_hubert
from jaxslm.models import hubert
from jaxslm.speech.hubert_features import HubertFeatures
from jaxslm.speech.quantize import assign, load_codebook
from jaxslm.speech.tokenizer import SpeechTokenizer

SAMPLE_RATE = 16_000
PAD = 40  # slamkit's zero samples on each side
MHUBERT_CONVS = dict(
    conv_dim=(512,) * 8,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2, 2),
    conv_pos_batch_norm=True,
)
SHAPES: dict[str, dict] = {
    # slprl/mhubert-base-25hz; the rest are transformers' HubertConfig defaults (HuBERT-base).
    "mhubert": dict(MHUBERT_CONVS),
    "tiny": dict(
        MHUBERT_CONVS,
        conv_dim=(32,) * 8,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    ),
}
DEFAULT_LAYER = {"mhubert": 11, "tiny": 2}
Units = list[tuple[np.ndarray, np.ndarray]]


# ----------------------------------------------------------------------------- shared inputs


def random_hubert(shape: str, seed: int = 0) -> HubertModel:
    """A HubertModel of `shape` whose parameters and BatchNorm statistics are all random.

    Norm scales are 1 + 0.1 noise, every other parameter 0.08 noise (as the tests' models), so
    every weight moves the features.
    """
    torch.manual_seed(seed)
    model = HubertModel(HubertConfig(**SHAPES[shape])).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1 + 0.1 * noise if "norm" in name else 0.08 * noise)
        batch_norm = model.encoder.pos_conv_embed.batch_norm
        if batch_norm is not None:
            width = batch_norm.running_mean.shape[0]
            batch_norm.running_mean.copy_(0.1 * torch.randn(width, generator=generator))
            batch_norm.running_var.copy_(0.5 + torch.rand(width, generator=generator))
    return model


def random_waves(total: float, low: float, high: float, seed: int = 0) -> list[np.ndarray]:
    """Utterances of `low` to `high` seconds (uniform) adding up to about `total` seconds.

    Each is a tone whose pitch wanders between 90 and 300 Hz, amplitude-modulated at a few Hz
    (syllable-like), plus white noise; float32 in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    waves, seconds = [], 0.0
    while seconds < total:
        length = round(min(rng.uniform(low, high), max(total - seconds, low)) * SAMPLE_RATE)
        t = np.arange(length) / SAMPLE_RATE
        pitch = rng.uniform(90, 300) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.2, 1) * t))
        phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 6))
        wave = 0.3 * envelope * np.sin(phase) + 0.03 * rng.standard_normal(length)
        waves.append(np.clip(wave, -1, 1).astype(np.float32))
        seconds += length / SAMPLE_RATE
    return waves


def audio_seconds(waves: Sequence[np.ndarray]) -> float:
    return sum(len(w) for w in waves) / SAMPLE_RATE


def frame_ids(units: Units) -> list[np.ndarray]:
    """The frame-level unit ids behind (units, durations) pairs."""
    return [np.repeat(u, d) for u, d in units]


def agreement(got: Units, want: Units) -> float:
    """Fraction of `want`'s frames whose id `got` matches; missing or extra frames disagree."""
    same = total = 0
    for a, b in zip(frame_ids(got), frame_ids(want), strict=True):
        n = min(a.size, b.size)
        same += int(np.sum(a[:n] == b[:n]))
        total += max(a.size, b.size)
    return same / max(total, 1)


# ----------------------------------------------------------------------------- torch (slamkit)


class SlamkitPath:
    """slamkit's HubertFeatureExtractor.extract + dedup over a list of waves (see the docstring)."""

    def __init__(
        self,
        model: HubertModel,
        centroids: np.ndarray,
        layer: int,
        batch: int,
        device: str,
        autocast: torch.dtype | None,
        sklearn: bool = False,
    ):
        self.model, self.layer, self.batch, self.device = model, layer, batch, device
        self.autocast = autocast
        self.centroids = torch.from_numpy(centroids).to(device)
        self.centroid_sq = (self.centroids * self.centroids).sum(-1)
        self.kmeans = sklearn_kmeans(centroids) if sklearn else None

    def name(self) -> str:
        return f"torch batch {self.batch}" + (", sklearn predict" if self.kmeans else "")

    def batches(self, waves: Sequence[np.ndarray]):
        """(padded [B, max_len] tensor on the device, lengths [B]) per batch, input order."""
        for start in range(0, len(waves), self.batch):
            chunk = waves[start : start + self.batch]
            lengths = torch.tensor([len(w) for w in chunk])
            wav = torch.zeros(len(chunk), int(lengths.max()))
            for row, wave in enumerate(chunk):
                wav[row, : len(wave)] = torch.from_numpy(wave)
            yield wav.to(self.device), lengths

    def hidden(self, wav: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            device_type=self.device.split(":")[0],
            dtype=self.autocast or torch.float32,
            enabled=self.autocast is not None,
        ):
            out = self.model(F.pad(wav, (PAD, PAD)), output_hidden_states=True)
        return out.hidden_states[self.layer].float()

    def nearest(self, hidden: torch.Tensor) -> np.ndarray:
        """[B, T] unit ids of [B, T, D] features."""
        if self.kmeans is not None:
            flat = hidden.cpu().numpy().reshape(-1, hidden.shape[-1])
            return self.kmeans.predict(flat).reshape(hidden.shape[:2])
        scores = self.centroid_sq - 2 * hidden @ self.centroids.T
        return scores.argmin(-1).cpu().numpy()

    @torch.inference_mode()
    def __call__(self, waves: Sequence[np.ndarray]) -> Units:
        result = []
        for wav, lengths in self.batches(waves):
            ids = self.nearest(self.hidden(wav))
            keep = ((lengths.float() / wav.shape[1]) * ids.shape[1]).ceil().int()  # slamkit's
            result += [dedup(row[:n]) for row, n in zip(ids, keep.tolist(), strict=True)]
        return result

    def padding(self, waves: Sequence[np.ndarray]) -> float:
        computed = sum(
            len(chunk) * (max(map(len, chunk)) + 2 * PAD)
            for chunk in (waves[i : i + self.batch] for i in range(0, len(waves), self.batch))
        )
        return computed / sum(map(len, waves))


def sklearn_kmeans(centroids: np.ndarray):
    """A fitted-looking sklearn MiniBatchKMeans with these centres (slamkit's `.predict`)."""
    from sklearn.cluster import MiniBatchKMeans

    kmeans = MiniBatchKMeans(n_clusters=centroids.shape[0])
    kmeans.cluster_centers_ = centroids
    kmeans.n_features_in_ = centroids.shape[1]
    kmeans._n_threads = torch.get_num_threads()
    return kmeans


# ----------------------------------------------------------------------------- jaxslm


class JaxslmPath:
    """`SpeechTokenizer.units` with its own HubertFeatures per batch_seconds and bucket_seconds
    (None: the device's)."""

    def __init__(self, encoder, codebook, layer: int, batch_seconds: float, bucket_seconds=None):
        self.encoder, self.batch_seconds = encoder, batch_seconds
        features = HubertFeatures(
            encoder, layer, batch_seconds=batch_seconds, bucket_seconds=bucket_seconds
        )
        self.bucket_seconds = features.bucket_samples / SAMPLE_RATE
        self.tokenizer = SpeechTokenizer(features, codebook)

    def name(self) -> str:
        return f"jaxslm batch_seconds {self.batch_seconds:g}, bucket {self.bucket_seconds:g} s"

    def __call__(self, waves: Sequence[np.ndarray]) -> Units:
        return self.tokenizer.units(waves)

    def groups(self, waves: Sequence[np.ndarray]) -> list[tuple[int, int, list[int]]]:
        """(rows, width, wave indices) of every encoder call `units` makes (its own rule)."""
        features = self.tokenizer.features
        out = []
        for batch, width in features._batches([len(w) + 2 * PAD for w in waves]):
            rows = min(features._max_rows(width), 1 << (len(batch) - 1).bit_length())
            out.append((rows, width, batch))
        return out

    def padding(self, waves: Sequence[np.ndarray]) -> float:
        computed = sum(rows * width for rows, width, _ in self.groups(waves))
        return computed / sum(map(len, waves))

    def shapes(self, waves: Sequence[np.ndarray]) -> int:
        return len({(rows, width) for rows, width, _ in self.groups(waves)})


# ----------------------------------------------------------------------------- timing


def timed(run: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def jax_stages(path: JaxslmPath, waves: Sequence[np.ndarray]) -> dict[str, tuple]:
    """Cumulative pieces of jaxslm's encoder by label."""
    graphdef, _ = nnx.split(path.encoder)
    layer = path.tokenizer.features.layer

    def convs(count: int, norm: bool = True) -> Callable:
        def run(state, x, lengths):
            model = nnx.merge(graphdef, state)
            x = x.astype(model.config.dtype)[..., None]
            if not norm:  # the bare strided conv of the first block
                block = model.conv_layers[0]
                return hubert.conv1d(x, block.kernel[...], block.stride, "VALID")
            for block in model.conv_layers[:count]:
                x, lengths = block(x, lengths)
            return x

        return run

    def input_states(state, x, lengths):
        return nnx.merge(graphdef, state).input_states(x, lengths)[0]

    def up_to_layer(state, x, lengths):
        return nnx.merge(graphdef, state)(x, lengths, layer)

    cfg = path.encoder.config
    num_convs = len(cfg.conv_dim)
    return {
        f"conv 1 alone (1 -> {cfg.conv_dim[0]} channels)": convs(1, norm=False),
        "conv 1 + masked GroupNorm + GELU": convs(1),
        f"{num_convs} convs (feature extractor)": convs(num_convs),
        "+ LayerNorm, projection, BatchNorm, pos conv": input_states,
        f"+ {layer} transformer layers (the jitted call)": up_to_layer,
    }


def breakdown(
    jax_path: JaxslmPath,
    torch_path: SlamkitPath | None,
    waves: Sequence[np.ndarray],
    repeat: int,
) -> dict[str, float]:
    """Seconds per stage of jaxslm's tokenizer and of torch at batch 1: medians of `repeat`
    rounds, each round timing every stage once (interleaved, as the main table).

    jaxslm's encoder stages run on exactly the padded batches `units` builds (host padding not
    included); torch's run on each wave alone, padded by 40 samples.
    """
    features = jax_path.tokenizer.features
    _, state = nnx.split(jax_path.encoder)
    inputs = []
    for rows, width, batch in jax_path.groups(waves):
        padded = np.zeros((rows, width), np.float32)
        lengths = np.full((rows,), width, np.int32)
        for row, index in enumerate(batch):
            padded[row, PAD : PAD + len(waves[index])] = waves[index]
            lengths[row] = len(waves[index]) + 2 * PAD
        inputs.append((jnp.asarray(padded), jnp.asarray(lengths)))

    runners: dict[str, Callable[[], object]] = {}
    for label, fn in jax_stages(jax_path, waves).items():
        jitted = jax.jit(lambda *args, fn=fn: fn(*args))  # a fresh trace cache per stage
        calls = [jitted.lower(state, w, n).compile() for w, n in inputs]

        def run(calls=calls):
            return jax.block_until_ready(
                [call(state, w, n) for call, (w, n) in zip(calls, inputs, strict=True)]
            )

        runners["jaxslm " + label] = run

    frames = features.extract(waves)
    stacked = np.concatenate(frames)
    codebook = jax_path.tokenizer.codebook
    ids = assign(stacked, codebook)
    bounds = np.cumsum([0, *(f.shape[0] for f in frames)])
    runners["jaxslm HubertFeatures.extract (host work included)"] = lambda: features.extract(waves)
    runners["jaxslm assign (all frames at once)"] = lambda: assign(stacked, codebook)
    runners["jaxslm dedup"] = lambda: [
        dedup(ids[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]

    if torch_path is not None:
        model, layer, device = torch_path.model, torch_path.layer, torch_path.device
        single = SlamkitPath(model, codebook.centroids, layer, 1, device, torch_path.autocast)
        padded = [F.pad(wav, (PAD, PAD)) for wav, _ in single.batches(waves)]

        def torch_stage(fn: Callable) -> Callable[[], object]:
            @torch.inference_mode()
            def run():
                out = [fn(wav) for wav in padded]
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                return out

            return run

        with torch.inference_mode():
            hidden = [single.hidden(wav) for wav, _ in single.batches(waves)]
        flat = [h[0].cpu().numpy() for h in hidden]
        kmeans = sklearn_kmeans(codebook.centroids)
        first_conv = model.feature_extractor.conv_layers[0]
        depth = model.config.num_hidden_layers
        runners.update(
            {
                "torch b1 conv 1 + GroupNorm + GELU": torch_stage(lambda x: first_conv(x[:, None])),
                "torch b1 conv feature extractor": torch_stage(model.feature_extractor),
                f"torch b1 forward ({depth} layers, hidden_states)": torch_stage(
                    lambda x: model(x, output_hidden_states=True).hidden_states[layer]
                ),
                "torch b1 nearest centroid (matmul argmin)": lambda: [
                    single.nearest(h) for h in hidden
                ],
                "sklearn MiniBatchKMeans.predict per wave (slamkit)": lambda: [
                    kmeans.predict(f) for f in flat
                ],
            }
        )

    for run in runners.values():  # warm-up
        run()
    seconds: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(repeat):
        for label, run in runners.items():
            seconds[label].append(timed(run)[0])
    return {label: statistics.median(values) for label, values in seconds.items()}


# ----------------------------------------------------------------------------- main


def csv(kind: type) -> Callable[[str], list]:
    return lambda text: [kind(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=SHAPES, default="mhubert")
    parser.add_argument("--layer", type=int, default=None, help="HuBERT layer (default 11; tiny 2)")
    parser.add_argument("--units", type=int, default=500, help="codebook size K")
    parser.add_argument(
        "--seconds", type=float, default=None, help="total audio per pass (CPU 120, GPU 300)"
    )
    parser.add_argument("--min-seconds", type=float, default=2.0, help="shortest utterance")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="longest utterance")
    parser.add_argument(
        "--torch-batch",
        type=csv(int),
        default=[8, 1],
        help="torch batch sizes, comma list (default 8,1)",
    )
    parser.add_argument(
        "--batch-seconds",
        type=csv(float),
        default=[120.0, 30.0],
        help="jaxslm HubertFeatures batch_seconds to time, comma list (default 120 = jaxslm's "
        "default, 30)",
    )
    parser.add_argument(
        "--bucket-seconds",
        type=csv(float),
        default=[None],
        help="jaxslm's smallest length bucket(s) in seconds, comma list (default: the device's, "
        "jaxslm.backend.hubert_bucket_seconds)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per figure (median)")
    parser.add_argument("--side", choices=["both", "jaxslm", "torch"], default="both")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="compute dtype (default: bfloat16 on CUDA, float32 on CPU); torch autocasts, "
        "jaxslm runs bfloat16 for both half types",
    )
    parser.add_argument(
        "--sklearn",
        action="store_true",
        help="also time slamkit's exact assignment: torch features at the largest "
        "--torch-batch, then sklearn MiniBatchKMeans.predict on the CPU",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the stages of jaxslm (first --batch-seconds) and, unless --side "
        "jaxslm, of torch at batch 1",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the model files here")
    add_device_options(
        parser, "jaxslm's first passes", "one pass of the fastest jaxslm configuration"
    )
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 300.0 if jax.default_backend() == "gpu" else 120.0

    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    autocast = None if dtype == "float32" else getattr(torch, dtype)
    layer = DEFAULT_LAYER[args.shape] if args.layer is None else args.layer

    work = Path(args.workdir or tempfile.mkdtemp(prefix="tokenize_audio_"))
    model = random_hubert(args.shape, args.seed)
    model.save_pretrained(work / "hubert")
    model = model.to(device)
    width = model.config.hidden_size
    centroids = np.random.default_rng(args.seed + 1).standard_normal((args.units, width))
    np.save(work / "codebook.npy", centroids.astype(np.float32))
    codebook = load_codebook(work / "codebook.npy")
    encoder = load_hubert(work / "hubert", dtype="float32" if dtype == "float32" else "bfloat16")
    waves = random_waves(args.seconds, args.min_seconds, args.max_seconds, args.seed + 2)
    total = audio_seconds(waves)
    lengths = sorted(round(len(w) / SAMPLE_RATE, 1) for w in waves)
    where = (
        f"jax backend {jax.default_backend()} ({jax.devices()[0].device_kind}), torch device "
        + (f"cuda ({torch.cuda.get_device_name()})" if device == "cuda" else "cpu")
        + f" with {torch.get_num_threads()} threads, {os.cpu_count()} CPU cores"
    )
    print(
        f"shape {args.shape}, layer {layer}, K {args.units}, {dtype}; {len(waves)} utterances, "
        f"{total:.1f} s of audio, lengths {lengths} s\n{where}",
        flush=True,
    )

    paths: list[SlamkitPath | JaxslmPath] = []
    if args.side in ("both", "torch"):
        for batch in args.torch_batch:
            paths.append(SlamkitPath(model, codebook.centroids, layer, batch, device, autocast))
        if args.sklearn:
            batch = max(args.torch_batch)
            paths.append(
                SlamkitPath(model, codebook.centroids, layer, batch, device, autocast, True)
            )
    if args.side in ("both", "jaxslm"):
        for seconds in args.batch_seconds:
            for bucket in args.bucket_seconds:
                paths.append(JaxslmPath(encoder, codebook, layer, seconds, bucket))

    # First pass of each: warm-up, compilation, and the units compared with torch batch 1.
    clock = CompileClock()
    reference = SlamkitPath(model, codebook.centroids, layer, 1, device, autocast)
    first: dict[str, tuple[float, Units]] = {}
    if reference.name() not in {path.name() for path in paths}:
        print("reference pass: torch batch 1 ...", flush=True)
        first[reference.name()] = timed(lambda: reference(waves))
    compile_info, warm = {}, {}
    for index, path in enumerate(paths):
        jaxslm_side = isinstance(path, JaxslmPath)
        if jaxslm_side:  # the encoder's programs are shared: each configuration compiles its own
            jax.clear_caches()
            if args.compile_cache:
                cache = fresh_compile_cache(args.compile_cache / str(index))
        clock.take()
        first[path.name()] = timed(lambda path=path: path(waves))
        compile_info[path.name()] = clock.take()
        print(f"  first pass {path.name()}: {first[path.name()][0]:.1f} s", flush=True)
        if jaxslm_side and args.compile_cache:
            jax.clear_caches()
            warm[path.name()] = timed(lambda path=path: path(waves))[0]
            print(
                f"    again with the {cache_entries(cache)} programs it stored: "
                f"{warm[path.name()]:.1f} s",
                flush=True,
            )
    for path in paths:  # compile again what a later clear_caches() dropped
        if isinstance(path, JaxslmPath):
            path(waves)
    want = first[reference.name()][1]
    agree = {path.name(): agreement(first[path.name()][1], want) for path in paths}

    runs: dict[str, list[float]] = {path.name(): [] for path in paths}
    for index in range(args.repeat):
        for path in paths:
            seconds = timed(lambda path=path: path(waves))[0]
            runs[path.name()].append(total / seconds)
        print(f"  repeat {index + 1}/{args.repeat} done", flush=True)
    rates = {name: statistics.median(values) for name, values in runs.items()}

    torch_names = [p.name() for p in paths if isinstance(p, SlamkitPath)]
    jax_names = [p.name() for p in paths if isinstance(p, JaxslmPath)]
    best_torch = max(torch_names, key=rates.__getitem__) if torch_names else None
    best_jax = max(jax_names, key=rates.__getitem__) if jax_names else None

    print(
        f"\n{total:.1f} s of audio in {len(waves)} utterances; shape {args.shape}, layer {layer}, "
        f"K {args.units}, {dtype}; median of {args.repeat} passes\n{where}"
    )
    print(
        "ratio: over the fastest torch row; agree: frames whose unit equals torch batch 1's; "
        "padding: computed / real samples"
    )
    print(
        f"{'side, settings':56s} {'audio s/s':>9s} {'ratio':>6s} {'agree':>8s} {'padding':>7s} "
        f"{'compile':>12s}  passes (audio s/s)"
    )
    for path in paths:
        name = path.name()
        ratio = f"{rates[name] / rates[best_torch]:.2f}x" if best_torch else "-"
        compile_s, compiles = compile_info[name]
        compile_text = f"{compile_s:.1f} s / {compiles}" if isinstance(path, JaxslmPath) else "-"
        mark = " *" if name in (best_jax, best_torch) else ""
        each = ", ".join(f"{rate:.2f}" for rate in runs[name])
        print(
            f"{name + mark:56s} {rates[name]:9.2f} {ratio:>6s} {100 * agree[name]:7.3f}% "
            f"{path.padding(waves):6.2f}x {compile_text:>12s}  {each}"
        )
    print("* fastest of its side")
    print("compile: JAX trace + lower + compile seconds / backend compiles in the first pass")
    for path in paths:
        if isinstance(path, JaxslmPath):
            print(f"  {path.name()}: {path.shapes(waves)} encoder shapes")
    if best_jax and best_torch:
        print(
            f"fastest jaxslm / fastest torch: {rates[best_jax] / rates[best_torch]:.2f}x "
            f"({best_jax} / {best_torch})"
        )
    profile = None
    if args.profile and best_jax:
        path = next(p for p in paths if p.name() == best_jax)
        profile = trace_call(lambda: path(waves), args.profile)
        print_trace(f"one pass of {best_jax}", profile)
    for name, seconds in warm.items():
        print(
            f"  {name}: first pass {first[name][0]:.1f} s with an empty compilation cache, "
            f"{seconds:.1f} s with a filled one"
        )
    if args.json:
        rows = [
            dict(
                name=path.name(),
                side="jaxslm" if isinstance(path, JaxslmPath) else "torch",
                audio_seconds_per_second=rates[path.name()],
                passes=runs[path.name()],
                agreement=agree[path.name()],
                padding=path.padding(waves),
                first_pass_s=first[path.name()][0],
                warm_first_pass_s=warm.get(path.name()),
                compile_s=compile_info[path.name()][0],
                compiles=compile_info[path.name()][1],
            )
            for path in paths
        ]
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        info = dict(where=where, dtype=dtype, audio_seconds=total, utterances=len(waves))
        summary = dict(best_jaxslm=best_jax, best_torch=best_torch, profile=profile)
        args.json.write_text(
            json.dumps({"config": config, **info, **summary, "results": rows}, indent=1)
        )

    if args.breakdown:
        jax_path = JaxslmPath(encoder, codebook, layer, args.batch_seconds[0])
        print(
            f"\nbreakdown: {jax_path.name()} (its padded batches) and torch batch 1, "
            f"median of {args.repeat}",
            flush=True,
        )
        torch_path = None if args.side == "jaxslm" else reference
        for name, seconds in breakdown(jax_path, torch_path, waves, args.repeat).items():
            print(f"  {name:64s} {seconds:7.2f} s {total / seconds:9.1f} audio s/s")


if __name__ == "__main__":
    main()
