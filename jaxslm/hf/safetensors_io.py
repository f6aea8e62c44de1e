"""Streaming safetensors: read one tensor at a time from single or sharded files, and write
shards tensor by tensor, so neither direction holds a second copy of the model.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from jaxslm.errors import JaxslmError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
HF_MAX_SHARD_BYTES = 5 * 10**9

DTYPE_BY_CODE = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
CODE_BY_DTYPE = {dtype: code for code, dtype in DTYPE_BY_CODE.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives."""

    path: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int


class SafetensorsFile:
    """One .safetensors file whose tensors are read one at a time, on demand."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with open(path, "rb") as handle:
                (header_len,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(header_len))
        except (OSError, struct.error, ValueError) as err:
            raise JaxslmError(f"{path}: not a readable safetensors file ({err})") from err
        if not isinstance(header, dict):
            raise JaxslmError(f"{path}: not a safetensors file (its header is not a JSON object)")
        header.pop("__metadata__", None)
        file_size = path.stat().st_size
        self.tensors: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            try:
                code, (start, end) = entry["dtype"], entry["data_offsets"]
                shape = tuple(int(size) for size in entry["shape"])
            except (KeyError, TypeError, ValueError) as err:
                raise JaxslmError(f"{path}: tensor {name} has a malformed header entry") from err
            if code not in DTYPE_BY_CODE:
                raise JaxslmError(f"{path}: tensor {name} has unsupported dtype {code}")
            dtype = DTYPE_BY_CODE[code]
            fits = 8 + header_len + end <= file_size
            if end - start != math.prod(shape) * dtype.itemsize or not fits:
                raise JaxslmError(f"{path}: tensor {name} has offsets that do not match its shape")
            self.tensors[name] = TensorInfo(path, dtype, shape, 8 + header_len + start)

    def read(self, name: str) -> np.ndarray:
        """Tensor `name`, read from disk into a new array."""
        info = self.tensors[name]
        count = math.prod(info.shape)
        return np.fromfile(info.path, info.dtype, count, offset=info.offset).reshape(info.shape)


class WeightStore:
    """All tensors of a HF model directory (`model.safetensors` or a sharded index)."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        if (directory / INDEX_FILE).is_file():
            files = _shard_files(directory / INDEX_FILE)
        elif (directory / SINGLE_FILE).is_file():
            files = [SINGLE_FILE]
        else:
            raise JaxslmError(
                f"{directory}: no {SINGLE_FILE} or {INDEX_FILE}; convert PyTorch .bin weights to "
                "safetensors first (transformers: save_pretrained(..., safe_serialization=True))"
            )
        missing = [name for name in files if not (directory / name).is_file()]
        if missing:
            raise JaxslmError(f"{directory / INDEX_FILE}: lists missing shard files {missing}")
        self.files = [SafetensorsFile(directory / name) for name in files]
        self._owner = {name: f for f in self.files for name in f.tensors}

    def names(self) -> list[str]:
        """Every tensor name."""
        return list(self._owner)

    def info(self, name: str) -> TensorInfo:
        """Location, dtype and shape of `name`."""
        return self._owner[name].tensors[name]

    def read(self, name: str) -> np.ndarray:
        """Tensor `name`, read into a new array."""
        return self._owner[name].read(name)

    def __contains__(self, name: str) -> bool:
        return name in self._owner


def _shard_files(index_path: Path) -> list[str]:
    """The shard file names of a sharded checkpoint's index, refusing a malformed index."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise JaxslmError(f"{index_path}: not valid JSON ({err})") from err
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise JaxslmError(
            f"{index_path}: expected a JSON object whose 'weight_map' maps tensor names to "
            "shard files; re-save the model, or remove the index if model.safetensors is whole"
        )
    names = list(weight_map.values())
    bad = [name for name in names if not isinstance(name, str) or Path(name).name != name]
    if bad:
        raise JaxslmError(
            f"{index_path}: 'weight_map' names {bad[:3]}, not shard file names in this folder"
        )
    return sorted(set(names))


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor to write: its name, shape, dtype and a function that produces its data."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    produce: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def plan_shards(tensors: Iterable[PlannedTensor], max_bytes: int) -> list[list[PlannedTensor]]:
    """Split tensors, in order, into shards of at most `max_bytes` (one oversize tensor alone)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def write_model(
    directory: Path,
    tensors: list[PlannedTensor],
    max_shard_bytes: int = HF_MAX_SHARD_BYTES,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write tensors as HF does: one `model.safetensors`, or numbered shards plus an index."""
    shards = plan_shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        _write_file(directory / name, shard, progress)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.nbytes for t in tensors)},
            "weight_map": {
                t.name: name for name, shard in zip(names, shards, strict=True) for t in shard
            },
        }
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return [directory / name for name in names]


def _write_file(path: Path, tensors: list[PlannedTensor], progress) -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {
            "dtype": CODE_BY_DTYPE[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as handle, ThreadPoolExecutor(max_workers=1) as producer:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        upcoming = producer.submit(tensors[0].produce) if tensors else None
        for index, tensor in enumerate(tensors):
            data = upcoming.result()
            if index + 1 < len(tensors):  # produce the next tensor while this one is written
                upcoming = producer.submit(tensors[index + 1].produce)
            data = np.ascontiguousarray(data, dtype=tensor.dtype)
            if data.shape != tensor.shape:
                raise ValueError(f"{tensor.name}: produced {data.shape}, planned {tensor.shape}")
            handle.write(data.reshape(-1).view(np.uint8))
            if progress is not None:
                progress(1)
