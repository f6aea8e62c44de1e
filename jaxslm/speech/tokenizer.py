"""Audio to deduplicated units: HuBERT layer features, nearest k-means centroid, run lengths.

Two unit-extraction conventions exist, and units made one way do not score a model trained on
the other: slamkit's (each wave zero-padded by 40 samples on both sides, run whole) and
Cuervo & Marxer's `slm-data encode` (slm_scaling, src/slm_data/backends.py: no padding, each
30 s chunk run alone, chunks under 720 samples dropped, the chunks' frames joined before the
runs are merged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxslm.data.records import dedup
from jaxslm.errors import JaxslmError
from jaxslm.hf.hubert_import import load_hubert
from jaxslm.speech.hubert_features import HubertFeatures
from jaxslm.speech.quantize import Codebook, assign, load_codebook


@dataclass(frozen=True)
class Extraction:
    """How waves reach HuBERT: zeros padded on each side, and the chunk length each runs in."""

    pad_samples: int
    chunk_samples: int | None = None
    min_chunk_samples: int = 0


EXTRACTIONS = {
    "slamkit": Extraction(pad_samples=40),
    "cuervo-marxer": Extraction(pad_samples=0, chunk_samples=30 * 16000, min_chunk_samples=720),
}


class SpeechTokenizer:
    """HuBERT layer `layer` + a k-means codebook, as slamkit's unit tokenisers use them.

    `units(waves)` returns (units, durations) per 16 kHz wave: frame ids merged into runs when
    `deduplicate` (durations count frames), or every frame with duration 1.
    """

    def __init__(
        self,
        features: HubertFeatures,
        codebook: Codebook,
        deduplicate: bool = True,
        extraction: Extraction | None = None,
    ):
        width = features.config.hidden_size
        if codebook.dim != width:
            raise JaxslmError(
                f"the codebook's centroids have {codebook.dim} dimensions but HuBERT layer "
                f"{features.layer} gives {width}; use the codebook made for this model"
            )
        if extraction is None:
            extraction = Extraction(pad_samples=features.pad_samples)
        if extraction.pad_samples != features.pad_samples:
            raise JaxslmError(
                f"the extraction pads {extraction.pad_samples} samples but the HuBERT features "
                f"pad {features.pad_samples}; build HubertFeatures with the same pad_samples"
            )
        self.features, self.codebook, self.deduplicate = features, codebook, deduplicate
        self.extraction = extraction

    @classmethod
    def load(
        cls,
        hubert_dir: str | Path,
        layer: int,
        codebook: str | Path,
        trust_pickle: bool = False,
        deduplicate: bool = True,
        batch_seconds: float = 120.0,
        dtype: str = "float32",
        convention: str = "slamkit",
        final_norm: bool = False,
    ) -> SpeechTokenizer:
        """From a HF HubertModel directory and a codebook file (.npy, safetensors, or the
        textless pickle with `trust_pickle`), extracting as `convention` (EXTRACTIONS) does;
        `final_norm` as HubertFeatures takes it."""
        if convention not in EXTRACTIONS:
            raise JaxslmError(
                f"unit extraction convention {convention!r}; use one of {', '.join(EXTRACTIONS)}"
            )
        extraction = EXTRACTIONS[convention]
        encoder = load_hubert(hubert_dir, dtype=dtype)
        features = HubertFeatures(
            encoder,
            layer,
            batch_seconds=batch_seconds,
            pad_samples=extraction.pad_samples,
            final_norm=final_norm,
        )
        codebook = load_codebook(codebook, trust_pickle=trust_pickle)
        return cls(features, codebook, deduplicate, extraction)

    @property
    def frame_seconds(self) -> float:
        """Seconds per HuBERT frame (0.04 for mHuBERT-25Hz, 0.02 for 50 Hz models)."""
        return self.features.frame_seconds

    @property
    def num_units(self) -> int:
        """Codebook size K."""
        return self.codebook.num_units

    def units(
        self, waves: Sequence[np.ndarray], pad_to: Sequence[int] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(units, durations) int32 per wave, in input order, each wave as if tokenized alone.

        `pad_to` gives slamkit's tokenization of zero-padded batches, which has no attention
        mask (`HubertFeatureExtractor.extract`, slamkit/feature_extractor/
        hubert_feature_extractor.py): wave i is zero-extended to `pad_to[i]` samples (the
        longest of its batch), and of the frames T that gives it keeps the first
        ceil(len / pad_to x T), in float32 as slamkit computes it.
        """
        frames = self._frames(waves) if pad_to is None else self._padded_frames(waves, pad_to)
        if not frames:
            return []
        ids = assign(np.concatenate(frames), self.codebook)
        bounds = np.cumsum([0, *(f.shape[0] for f in frames)])
        result = []
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            frame_ids = ids[start:end]
            if self.deduplicate:
                result.append(dedup(frame_ids))
            else:
                result.append((frame_ids.astype(np.int32), np.ones(frame_ids.size, np.int32)))
        return result

    def _frames(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each wave's features, run whole or in the extraction's chunks (frames joined; a
        wave whose every chunk is too short gets none)."""
        size = self.extraction.chunk_samples
        if size is None:
            return self.features.extract(waves)
        owners, chunks = [], []
        for index, wave in enumerate(waves):
            for start in range(0, len(wave), size):
                chunk = wave[start : start + size]
                if len(chunk) >= self.extraction.min_chunk_samples:
                    owners.append(index)
                    chunks.append(chunk)
        parts: list[list[np.ndarray]] = [[] for _ in waves]
        for index, features in zip(owners, self.features.extract(chunks), strict=True):
            parts[index].append(features)
        empty = np.zeros((0, self.features.config.hidden_size), np.float32)
        return [np.concatenate(p) if p else empty for p in parts]

    def _padded_frames(self, waves: Sequence[np.ndarray], pad_to: Sequence[int]) -> list:
        if self.extraction.chunk_samples is not None:
            raise JaxslmError("slamkit's padded batches tokenize with slamkit's extraction")
        if len(pad_to) != len(waves) or any(p < len(w) for w, p in zip(waves, pad_to, strict=True)):
            raise JaxslmError("pad_to needs one length per wave, each at least the wave's length")
        padded = [np.pad(w, (0, p - len(w))) for w, p in zip(waves, pad_to, strict=True)]
        frames = self.features.extract(padded)
        lengths = np.asarray([len(w) for w in waves], np.float32)
        totals = np.asarray([f.shape[0] for f in frames], np.float32)
        kept = np.ceil(lengths / np.asarray(pad_to, np.float32) * totals).astype(np.int64)
        return [f[:k] for f, k in zip(frames, kept, strict=True)]
