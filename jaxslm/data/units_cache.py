"""The units cache of `build --audio` (OUT.units.jsonl): stamped with the tokenizer that
made it, so that units of another HuBERT, layer or codebook are never reused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_write_text


def tokenizer_stamp(hubert: Path, layer: int, codebook: Path, final_norm: bool = False) -> dict:
    """What makes the units: the HuBERT folder, the layer (with `final_norm` when set) and the
    codebook's content."""
    codebook = Path(codebook)
    try:
        digest = hashlib.sha256(codebook.read_bytes()).hexdigest()
    except OSError as err:
        raise JaxslmError(f"--codebook {codebook}: cannot read ({err.strerror or err})") from err
    stamp = {"hubert": str(Path(hubert).resolve()), "layer": layer, "codebook_sha256": digest}
    return {**stamp, "final_norm": True} if final_norm else stamp


def check_units_cache(units_path: Path, stamp: dict) -> None:
    """Refuse cached units of another tokenizer (slamkit's fixed cache name reuses them
    silently); stamp a new cache with this one."""
    stamp_path = units_path.with_name(units_path.name + ".tokenizer.json")
    if units_path.exists():
        try:
            cached = json.loads(stamp_path.read_text())
        except (OSError, ValueError):
            cached = None
        if cached != stamp:
            made = "an unknown tokenizer" if cached is None else f"another tokenizer ({cached})"
            raise JaxslmError(
                f"{units_path}: cached units of {made}, not of --hubert {stamp['hubert']} "
                f"--layer {stamp['layer']}{' --final-norm' if stamp.get('final_norm') else ''} "
                f"and this --codebook: delete it (and "
                f"{stamp_path.name}) to tokenize again, or pass the tokenizer it was made with"
            )
    atomic_write_text(stamp_path, json.dumps(stamp, indent=2) + "\n")
