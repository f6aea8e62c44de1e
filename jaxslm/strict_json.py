"""JSON that every parser reads: NaN and infinite floats written as null."""

from __future__ import annotations

import json
import math


def strict_json(value: object, indent: int | None = None) -> str:
    """`value` as strict JSON: NaN and infinite floats, however deep, become null."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
