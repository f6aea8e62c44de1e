"""A toy vocoder for the built-in toy language: each unit becomes a short tone.

The toy corpus has units but no audio, so no real vocoder can be fitted to it. This renderer
makes its continuations audible: unit u is a sine at 110 Hz x 2^((u mod 48) / 12) (four
octaves of semitones), lasting its frames x 40 ms (two frames when no durations are given),
with 5 ms raised-cosine fades so that units do not click. It is deterministic and says nothing
about how the units would sound as speech.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxslm.errors import JaxslmError

SAMPLE_RATE = 16_000
FRAME_SECONDS = 0.04
DEFAULT_FRAMES = 2
BASE_HZ = 110.0
SEMITONES = 48
AMPLITUDE = 0.3
FADE_SECONDS = 0.005


def tone_hz(unit: int) -> float:
    """The pitch of `unit`."""
    return BASE_HZ * 2.0 ** ((unit % SEMITONES) / 12)


class ToyToneVocoder:
    """Units -> 16 kHz tones (see the module docstring); `--vocoder toy` on the commands."""

    name = "toy"
    sample_rate = SAMPLE_RATE
    has_duration_predictor = False
    num_units = None

    def check_units(self, units: np.ndarray) -> str | None:
        if units.size == 0:
            return "no units"
        if units.min() < 0:
            return "negative unit ids"
        return None

    def speaker_id(self, speaker: str | int, kind: str = "speaker") -> int:
        if str(speaker) != "0":
            raise JaxslmError(f"--{kind} {speaker}: the toy vocoder has one voice")
        return 0

    def vocode(
        self,
        units: Sequence[np.ndarray],
        durations: Sequence[np.ndarray] | None = None,
        speaker: int = 0,
        style: int = 0,
    ) -> list[np.ndarray]:
        """A float32 wave per unit sequence; `speaker` and `style` are ignored."""
        frame = round(FRAME_SECONDS * SAMPLE_RATE)
        waves = []
        for index, sequence in enumerate(units):
            counts = (
                np.full(len(sequence), DEFAULT_FRAMES)
                if durations is None
                else np.asarray(durations[index])
            )
            pieces = [_tone(int(u), int(n) * frame) for u, n in zip(sequence, counts, strict=True)]
            waves.append(np.concatenate(pieces).astype(np.float32))
        return waves


def _tone(unit: int, samples: int) -> np.ndarray:
    time = np.arange(samples) / SAMPLE_RATE
    wave = AMPLITUDE * np.sin(2 * np.pi * tone_hz(unit) * time)
    fade = min(round(FADE_SECONDS * SAMPLE_RATE), samples // 2)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade) if fade else np.zeros(0)
    wave[:fade] *= ramp
    wave[samples - fade :] *= ramp[::-1]
    return wave
