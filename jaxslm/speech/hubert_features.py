"""Batched, jitted HuBERT features of many utterances, each exactly as if run alone.

Waves are padded with `pad_samples` zeros on both sides (slamkit's padding), sorted by length
and grouped into a few padded shapes: lengths round up to `bucket_seconds` times 1, 2, 3, 4,
6, 8, 12, ... (powers of two and 1.5 times powers of two), batch rows to a power of two within
a `batch_seconds` budget. One jitted function runs every shape, one compilation per shape;
`bucket_seconds` None takes `jaxslm.backend.hubert_bucket_seconds()` (0.5 s on CPUs).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxslm import backend
from jaxslm.errors import JaxslmError
from jaxslm.models.hubert import SAMPLE_RATE, HubertEncoder


class HubertFeatures:
    """Hidden states of layer `layer` (transformers' `hidden_states[layer]`) for 16 kHz waves.

    `final_norm` applies a stable-layout (HuBERT-large) encoder's final LayerNorm to its last
    layer, as transformers 4.x's `hidden_states[num_layers]` and every version's
    `last_hidden_state` do; transformers 5 and fairseq's `output_layer` leave it out.
    """

    def __init__(
        self,
        encoder: HubertEncoder,
        layer: int,
        batch_seconds: float = 120.0,
        bucket_seconds: float | None = None,
        pad_samples: int = 40,
        final_norm: bool = False,
    ):
        cfg = encoder.config
        if bucket_seconds is None:
            bucket_seconds = backend.hubert_bucket_seconds()
        if not 0 <= layer <= cfg.num_layers:
            raise JaxslmError(f"HuBERT layer {layer} does not exist; use 0..{cfg.num_layers}")
        if batch_seconds < bucket_seconds or bucket_seconds <= 0 or pad_samples < 0:
            raise JaxslmError(
                f"HubertFeatures: batch_seconds={batch_seconds}, bucket_seconds={bucket_seconds}"
                f", pad_samples={pad_samples}; use 0 < bucket_seconds <= batch_seconds and "
                "pad_samples >= 0"
            )
        if final_norm and not (cfg.do_stable_layer_norm and layer == cfg.num_layers):
            raise JaxslmError(
                f"final_norm (--final-norm) with HuBERT layer {layer} of a "
                f"{'stable' if cfg.do_stable_layer_norm else 'base'}-layout model: only the "
                "stable (large) layout has a LayerNorm after its last layer; use it with "
                f"--layer {cfg.num_layers} of such a model, or leave it out"
            )
        self.config = cfg
        self.layer = layer
        self._forward_layer = None if final_norm else layer
        self.pad_samples = pad_samples
        self.bucket_samples = max(1, round(bucket_seconds * SAMPLE_RATE))
        self.batch_samples = round(batch_seconds * SAMPLE_RATE)
        self._graphdef, self._state = nnx.split(encoder)

    @property
    def frame_seconds(self) -> float:
        """Seconds per output frame (0.02 for HuBERT-base, 0.04 for mHuBERT-25Hz)."""
        return self.config.frame_seconds

    def frames(self, num_samples: int) -> int:
        """Frames `extract` returns for a wave of `num_samples` samples (before its padding)."""
        return self.config.num_frames(num_samples + 2 * self.pad_samples)

    def padded_length(self, num_samples: int) -> int:
        """The bucketed input length for a padded wave of `num_samples` samples."""
        units = -(-num_samples // self.bucket_samples)
        power = 1 << max(units - 1, 0).bit_length()  # smallest power of two >= units
        three_quarters = power * 3 // 4
        return self.bucket_samples * (three_quarters if three_quarters >= max(units, 3) else power)

    def extract(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """float32 features [frames(len(wave)), hidden] for each 1-D wave, in input order."""
        for index, wave in enumerate(waves):
            if np.ndim(wave) != 1:
                raise JaxslmError(
                    f"HubertFeatures.extract: wave {index} has shape {np.shape(wave)}; "
                    "pass 1-D 16 kHz mono arrays"
                )
        features: dict[int, np.ndarray] = {}
        pending = None
        for batch, width in self._batches([len(w) + 2 * self.pad_samples for w in waves]):
            rows = min(self._max_rows(width), 1 << (len(batch) - 1).bit_length())
            inputs = np.zeros((rows, width), np.float32)
            lengths = np.full((rows,), width, np.int32)
            for row, index in enumerate(batch):
                inputs[row, self.pad_samples : self.pad_samples + len(waves[index])] = waves[index]
                lengths[row] = len(waves[index]) + 2 * self.pad_samples
            # dispatched, not waited for: the device runs it while the previous batch is read
            result = _forward(self._graphdef, self._state, inputs, lengths, self._forward_layer)
            if pending is not None:
                self._collect(*pending, waves, features)
            pending = (batch, result)
        if pending is not None:
            self._collect(*pending, waves, features)
        return [features[index] for index in range(len(waves))]

    def _max_rows(self, width: int) -> int:
        return max(1, self.batch_samples // width)

    def _batches(self, lengths: list[int]) -> Iterator[tuple[list[int], int]]:
        """Indices grouped by bucketed length (shortest first), at most `_max_rows` per group."""
        batch: list[int] = []
        width = 0
        for index in sorted(range(len(lengths)), key=lengths.__getitem__):
            bucket = self.padded_length(lengths[index])
            if batch and (bucket != width or len(batch) == self._max_rows(width)):
                yield batch, width
                batch = []
            batch.append(index)
            width = bucket
        if batch:
            yield batch, width

    def _collect(
        self,
        batch: list[int],
        result: jax.Array,
        waves: Sequence[np.ndarray],
        features: dict[int, np.ndarray],
    ) -> None:
        values = np.asarray(result)
        for row, index in enumerate(batch):
            features[index] = values[row, : self.frames(len(waves[index]))].copy()


@functools.partial(jax.jit, static_argnums=(0, 4))
def _forward(graphdef, state: nnx.State, waves: jax.Array, lengths: jax.Array, layer: int | None):
    """float32 hidden states of `layer` (None: `last_hidden_state`). Module-level, with the
    graph definition and layer as static arguments: every HubertFeatures of one model shares
    its compiled programs (a function made per instance would compile each shape again for
    each instance)."""
    return nnx.merge(graphdef, state)(waves, lengths, layer).astype(jnp.float32)
