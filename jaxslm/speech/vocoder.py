"""Units to waveforms: the jitted, batched unit HiFi-GAN, and `load_vocoder` for any vocoder.

Utterances of any lengths are vocoded together: each is padded to a length bucket (16 frames x
1, 1.5, 2, 3, 4, 6, 8, ...), rows of one bucket are batched up to `batch_frames` frames (rows
a power of two), so a whole set runs a handful of compiled shapes, and every utterance gets
the samples it gets alone, up to float32 rounding, which can differ between compiled shapes
(see jaxslm.speech.vocoder_model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxslm.errors import JaxslmError
from jaxslm.speech.vocoder_model import CodeHifiGan, VocoderConfig

TOY = "toy"
BUCKET_FRAMES = 16
DEFAULT_BATCH_FRAMES = 2048


class Vocoder(Protocol):
    """What the commands need of a vocoder."""

    name: str
    sample_rate: int
    has_duration_predictor: bool
    num_units: int | None  # ids it reads are [0, num_units); None: any non-negative id

    def check_units(self, units: np.ndarray) -> str | None:
        """Why `units` cannot be vocoded, or None."""

    def speaker_id(self, speaker: str | int, kind: str = "speaker") -> int:
        """A speaker (or style) id from an index or a name."""

    def vocode(
        self,
        units: Sequence[np.ndarray],
        durations: Sequence[np.ndarray] | None = None,
        speaker: int = 0,
        style: int = 0,
    ) -> list[np.ndarray]:
        """float32 waves, one per unit sequence."""


def bucket_length(length: int, base: int = BUCKET_FRAMES) -> int:
    """The padded length for `length`: `base` x 1, 1.5, 2, 3, 4, 6, 8, 12, ..."""
    units = -(-max(length, 1) // base)
    power = 1 << (units - 1).bit_length()
    three_quarters = power * 3 // 4
    return base * (three_quarters if three_quarters >= max(units, 3) else power)


def batches(lengths: Sequence[int], batch_frames: int) -> Iterator[tuple[list[int], int, int]]:
    """(indices, bucketed length, rows) per batch: indices sorted by length, grouped by bucket,
    at most max(1, batch_frames // length) per batch; rows is their count rounded up to a power
    of two within that budget."""
    group: list[int] = []
    width = 0
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        bucket = bucket_length(lengths[index])
        if group and (bucket != width or len(group) == max(1, batch_frames // width)):
            yield group, width, _rows(len(group), width, batch_frames)
            group = []
        group.append(index)
        width = bucket
    if group:
        yield group, width, _rows(len(group), width, batch_frames)


def _rows(count: int, width: int, batch_frames: int) -> int:
    return min(max(1, batch_frames // width), 1 << (count - 1).bit_length())


class UnitVocoder:
    """A CodeHifiGan with jitted forward passes over padded, bucketed batches."""

    def __init__(
        self,
        model: CodeHifiGan,
        name: str = "code-hifigan",
        speakers: Sequence[str] = (),
        styles: Sequence[str] = (),
        batch_frames: int = DEFAULT_BATCH_FRAMES,
    ):
        if batch_frames < 1:
            raise JaxslmError(f"batch_frames must be positive, got {batch_frames}")
        self.config: VocoderConfig = model.config
        self.name, self.batch_frames = name, batch_frames
        self.speakers, self.styles = list(speakers), list(styles)
        self.sample_rate = self.config.sampling_rate
        self.num_units = self.config.num_units
        self.has_duration_predictor = self.config.duration_hidden is not None
        graphdef, self._state = nnx.split(model)

        def waves(state, ids, lengths, speakers, styles):
            return nnx.merge(graphdef, state)(ids, lengths, speakers, styles)

        def frames(state, ids, lengths):
            log_durations = nnx.merge(graphdef, state).log_durations(ids, lengths)
            # textless: clamp(round(exp(log d) - 1), min=1); round is half to even in both
            return jnp.maximum(jnp.round(jnp.exp(log_durations) - 1), 1).astype(jnp.int32)

        self._waves, self._frames = jax.jit(waves), jax.jit(frames)

    @classmethod
    def load(cls, directory: str | Path, batch_frames: int = DEFAULT_BATCH_FRAMES) -> UnitVocoder:
        """From a textless/fairseq vocoder folder (see jaxslm.hf.vocoder_import)."""
        from jaxslm.hf.vocoder_import import load_code_hifigan, speaker_names

        model, files = load_code_hifigan(directory)
        return cls(
            model,
            Path(directory).name,
            speaker_names(files.speakers),
            speaker_names(files.styles),
            batch_frames,
        )

    def check_units(self, units: np.ndarray) -> str | None:
        if units.size == 0:
            return "no units"
        if units.min() < 0 or units.max() >= self.num_units:
            return f"units outside [0, {self.num_units}) of the vocoder"
        return None

    def speaker_id(self, speaker: str | int, kind: str = "speaker") -> int:
        """A speaker (or style) id from a name of speakers.txt / styles.txt or an index; a
        listed name wins (LibriSpeech-style speakers are named by numbers)."""
        names, count = (
            (self.speakers, self.config.num_speakers)
            if kind == "speaker"
            else (self.styles, self.config.num_styles)
        )
        if isinstance(speaker, str) and speaker in names:
            return names.index(speaker)
        if isinstance(speaker, str) and not speaker.isdigit():
            raise JaxslmError(f"--{kind} {speaker!r}: not in the vocoder's {kind}s.txt")
        index = int(speaker)
        if index and not 0 <= index < count:
            raise JaxslmError(
                f"--{kind} {index}: the vocoder has {count} {kind}s; use 0..{max(count - 1, 0)}"
            )
        return index

    def durations(self, units: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Predicted frames per unit (at least 1) for each deduplicated unit sequence."""
        return self._run(
            units, lambda ids, lengths, _: self._frames(self._state, ids, lengths), lambda n: n
        )

    def vocode(
        self,
        units: Sequence[np.ndarray],
        durations: Sequence[np.ndarray] | None = None,
        speaker: int = 0,
        style: int = 0,
    ) -> list[np.ndarray]:
        """A float32 wave per unit sequence. `durations` repeats each unit that many frames;
        None uses the duration predictor when the vocoder has one, else one frame per unit."""
        for sequence in units:
            problem = self.check_units(np.asarray(sequence))
            if problem is not None:
                raise JaxslmError(f"cannot vocode: {problem}")
        if durations is None and self.has_duration_predictor:
            durations = self.durations(units)
        if durations is None:
            frames = [np.asarray(u, np.int32) for u in units]
        else:
            frames = [np.repeat(u, d) for u, d in zip(units, durations, strict=True)]
        tags = np.asarray([speaker, style], np.int32)

        def run(ids, lengths, rows):
            conditions = [jnp.full((rows,), tag, jnp.int32) for tag in tags]
            return self._waves(self._state, ids, lengths, *conditions)

        return self._run(frames, run, self.config.num_samples)

    def _run(
        self, sequences: Sequence[np.ndarray], call: Callable, size: Callable[[int], int]
    ) -> list[np.ndarray]:
        """`call(ids [rows, width], lengths [rows], rows)` over bucketed batches of
        `sequences`; per sequence, in input order, the first size(length) values of its row."""
        results: list[np.ndarray | None] = [None] * len(sequences)
        lengths = [len(s) for s in sequences]
        sizes = [size(n) for n in lengths]
        pending = None
        for group, width, rows in batches(lengths, self.batch_frames):
            ids = np.zeros((rows, width), np.int32)
            valid = np.zeros((rows,), np.int32)
            for row, index in enumerate(group):
                ids[row, : lengths[index]] = sequences[index]
                valid[row] = lengths[index]
            output = call(ids, valid, rows)  # runs while the previous batch is collected
            if pending is not None:
                self._collect(*pending, results, sizes)
            pending = (group, output)
        if pending is not None:
            self._collect(*pending, results, sizes)
        return results

    @staticmethod
    def _collect(group: list[int], output: jax.Array, results: list, sizes: list[int]) -> None:
        values = np.asarray(output)
        for row, index in enumerate(group):
            results[index] = values[row, : sizes[index]].copy()


def load_vocoder(spec: str | Path, batch_frames: int = DEFAULT_BATCH_FRAMES) -> Vocoder:
    """`toy` (the built-in toy tone renderer) or a textless/fairseq vocoder folder."""
    if str(spec) == TOY:
        from jaxslm.speech.toy_vocoder import ToyToneVocoder

        return ToyToneVocoder()
    return UnitVocoder.load(spec, batch_frames)
