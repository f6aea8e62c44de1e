"""Reference log-probabilities computed once (`dpo.reference: precomputed`) and kept in
RUN_DIR/reference_logps/SPLIT.npz beside the fingerprint of what they were computed from:
the reference parameters (where they were read, a checksum of their values), the pairs as
token sequences (a digest that covers the corpus, `dpo.modality`, the truncation limits, BOS
and EOS) and the settings that change the numbers (dtypes, attention kernel, row layout).

One file holds both, written atomically, so a reader sees a whole file or none. A file whose
fingerprint differs from this run's, or that cannot be read, is recomputed with a notice."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxslm.config import TrainConfig
from jaxslm.data.preference_batches import EncodedPairs
from jaxslm.fsutil import atomic_file

REFERENCE_DIR = "reference_logps"
# The config keys whose values change the reference's log-probabilities or their packing.
SETTINGS = (
    "dpo.max_prompt_length",
    "dpo.max_completion_length",
    "dpo.modality",
    "dpo.share_prompt",
    "dpo.pairs_per_step",
    "data.seq_len",
    "data.batch_size",
    "model.dtype",
    "model.param_dtype",
    "model.attention",
    "model.rope_theta",
)


def cache_path(run_dir: str | Path, split: str) -> Path:
    """Where the reference log-probabilities of `split` are kept."""
    return Path(run_dir) / REFERENCE_DIR / f"{split}.npz"


def params_checksum(params: dict) -> str:
    """A checksum of the parameters' values (per array: sum and sum of squares, float32)."""
    leaves = jax.tree.leaves(params)
    sums = jax.jit(
        lambda leaves: [
            jnp.stack([jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.square(x.astype(jnp.float32)))])
            for x in leaves
        ]
    )(leaves)
    values = np.concatenate([np.asarray(jax.device_get(s)) for s in sums])
    return " ".join(f"{v:.6e}" for v in values.tolist())


def sequences_digest(encoded: EncodedPairs) -> str:
    """SHA-256 of the pairs' token sequences (prompt, chosen, rejected), lengths included."""
    digest = hashlib.sha256()
    for sequences in encoded.sequences:
        for tokens in sequences:
            tokens = np.asarray(tokens, np.int32)
            digest.update(np.int64(tokens.size).tobytes() + tokens.tobytes())
    return digest.hexdigest()


def fingerprint(
    cfg: TrainConfig, reference: str, checksum: str, encoded: EncodedPairs
) -> dict[str, str]:
    """What the log-probabilities of `encoded` depend on: `reference` (where its parameters
    came from), their `checksum`, the corpus, the pairs' tokens and the SETTINGS."""
    values = {key: getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]) for key in SETTINGS}
    values["model.dtype"] = cfg.model.numerics()["dtype"]  # `auto` as this platform runs it
    return {
        "reference": reference,
        "reference.checksum": hashlib.sha256(checksum.encode()).hexdigest(),
        "data.corpus": str(Path(cfg.data.corpus).absolute()),
        "pairs": str(len(encoded)),
        "pairs.tokens": sequences_digest(encoded),
        **{key: str(value) for key, value in values.items()},
    }


def load_cached(path: Path, expected: dict[str, str]) -> np.ndarray | None:
    """The log-probabilities kept at `path` if their fingerprint is `expected`; else None,
    with a notice saying why they will be recomputed (none when there is no file)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            stored, logps = json.loads(str(saved["fingerprint"])), saved["logps"]
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as error:
        print(f"{path} cannot be read ({error}): recomputing the reference log-probabilities")
        return None
    changed = [key for key in expected if stored.get(key) != expected[key]]
    if changed:
        differences = "; ".join(
            f"{key}: {_short(stored.get(key))} -> {_short(expected[key])}" for key in changed
        )
        print(f"{path} was computed for other inputs ({differences}): recomputing it")
        return None
    return logps


def save_cached(path: Path, logps: np.ndarray, expected: dict[str, str]) -> None:
    """Write `logps` with their fingerprint to `path`, atomically."""
    with atomic_file(path) as staging, staging.open("wb") as out:
        np.savez(out, logps=logps, fingerprint=np.asarray(json.dumps(expected)))


def _short(value: str | None) -> str:
    """A fingerprint value for a notice: digests cut to 12 characters."""
    if value is None:
        return "none"
    return value[:12] if len(value) == 64 else value
