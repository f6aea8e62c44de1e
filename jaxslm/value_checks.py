"""Value checks whose messages name the key, its value and the rule it breaks: one wording for
the training config's sections and the model description alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from jaxslm.errors import JaxslmError


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise, naming `key`, its value and the rule it breaks, unless `ok`."""
    if not ok:
        raise JaxslmError(f"{key}={value!r} {rule}")


def one_of(key: str, value: Any, choices: Sequence[str]) -> None:
    """`value` is one of `choices`."""
    require(value in choices, key, value, f"must be one of {', '.join(choices)}")


def positive(obj: object, prefix: str, *names: str) -> None:
    """Every named field of `obj` is unset or > 0; messages name it `prefix + name`."""
    _each(obj, prefix, names, lambda value: value > 0, "must be > 0")


def non_negative(obj: object, prefix: str, *names: str) -> None:
    """Every named field of `obj` is unset or >= 0; messages name it `prefix + name`."""
    _each(obj, prefix, names, lambda value: value >= 0, "must be >= 0")


def _each(
    obj: object, prefix: str, names: Sequence[str], ok: Callable[[Any], bool], rule: str
) -> None:
    for name in names:
        value = getattr(obj, name)
        require(value is None or ok(value), f"{prefix}{name}", value, rule)
