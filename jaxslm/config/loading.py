"""Reading and writing the training config: defaults, then a YAML file, then `section.key=value`
overrides, each value type-checked; messages name the source, the key and the fix.

    cfg = load_config("configs/tiny.yaml", ["optimizer.lr=1e-3", "budget.max_steps=200"])
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from jaxslm.config.train_config import TrainConfig
from jaxslm.errors import JaxslmError
from jaxslm.fsutil import atomic_write_text
from jaxslm.textfiles import read_yaml_mapping

COMMAND_LINE = "command line"
DEFAULT_NAME = "run"


_TOP = get_type_hints(TrainConfig)
_SECTIONS = {name: hint for name, hint in _TOP.items() if dataclasses.is_dataclass(hint)}
_SCALARS = {name: hint for name, hint in _TOP.items() if name not in _SECTIONS}
_FIELDS = {name: get_type_hints(section) for name, section in _SECTIONS.items()}
_INVALID = object()


def load_config(
    path: str | Path | None, overrides: Sequence[str] = (), overrides_from: str = COMMAND_LINE
) -> TrainConfig:
    """Defaults, then the YAML file at `path` (sections of keys), then `key=value` overrides
    (`optimizer.lr=1e-3`, `run_dir=PATH`); values are YAML. A `data.corpus` override turns
    the file's `data.build_synthetic` off (a mistyped path must not become a toy corpus)
    unless the command line sets that too. Raises JaxslmError on any unknown key, wrong type
    or invalid value, naming the file or `overrides_from` (where the overrides were written)."""
    values: dict[str, Any] = {name: {} for name in _SECTIONS}
    if path is not None:
        for key, value in _read_yaml(Path(path)).items():
            _assign_yaml(values, str(key), value, str(path))
    command_line = [_parse_override(item, overrides_from) for item in overrides]
    for key, value, text in command_line:
        _assign(values, key, value, overrides_from, text)
    keys = {key for key, _, _ in command_line}
    if "data.corpus" in keys and "data.build_synthetic" not in keys:
        values["data"]["build_synthetic"] = False  # a corpus named here is the user's own
    values.setdefault("name", Path(path).stem if path is not None else DEFAULT_NAME)
    try:
        sections = {name: cls(**values.pop(name)) for name, cls in _SECTIONS.items()}
        return TrainConfig(**values, **sections)
    except JaxslmError as err:
        sources = [str(path)] if path is not None else []
        sources += [overrides_from] if overrides else []
        raise JaxslmError(f"{' + '.join(sources) or 'defaults'}: {err}") from None


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The resolved config as plain YAML/JSON-ready values, nested by section."""
    return _plain(cfg)


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML that `load_config` reads back to an equal config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _plain(obj: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = _plain(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _read_yaml(path: Path) -> dict[Any, Any]:
    return read_yaml_mapping(path, "config file", "sections (model:, data:, ...)")


def _assign_yaml(values: dict[str, Any], key: str, value: Any, where: str) -> None:
    """One top-level YAML entry: a section mapping, or a top-level key."""
    if key not in _SECTIONS:
        _assign(values, key, value, where)
        return
    if value is None:
        return
    if not isinstance(value, dict):
        raise JaxslmError(f"{where}: section '{key}' must be a mapping of keys, got {value!r}")
    for leaf, leaf_value in value.items():
        _assign(values, f"{key}.{leaf}", leaf_value, where)


def _assign(
    values: dict[str, Any], key: str, value: Any, where: str, text: str | None = None
) -> None:
    """Type-check `value` for the dotted `key` and store it; `text` is the command-line spelling,
    kept verbatim for string keys (so `name=2024` is the string '2024')."""
    section, _, leaf = key.partition(".")
    if section in _SECTIONS and leaf in _FIELDS[section]:
        hint, target, name = _FIELDS[section][leaf], values[section], leaf
    elif key in _SCALARS:
        hint, target, name = _SCALARS[key], values, key
    elif section in _SECTIONS and not leaf:
        raise JaxslmError(f"{where}: '{key}' is a section; set its keys as {key}.KEY=VALUE")
    else:
        raise _unknown(key, where)
    if text is not None and value is not None and _accepts_str(hint):
        value = text.strip()
    target[name] = _coerce(value, hint, key, where)


def _parse_override(item: str, where: str) -> tuple[str, Any, str]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise JaxslmError(
            f"{where}: {item!r} is not an override; write section.key=value "
            "(e.g. optimizer.lr=1e-3 or data.stream_weights=[1,0,0]) or run_dir=PATH"
        )
    try:
        return key, yaml.safe_load(text), text
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or err
        raise JaxslmError(
            f"{where}: {key}={text} is not a YAML value ({problem}); quote strings "
            "and write lists as [a,b,c]"
        ) from None


def _unknown(key: str, where: str) -> JaxslmError:
    section, leaf = _split(key)
    what = "section" if section and section not in _SECTIONS else "key"
    name = section if what == "section" else key
    guess = _closest(key)
    if guess:
        fix = f"did you mean '{guess}'?"
    else:
        options = _FIELDS[section] if section in _SECTIONS else [*_SCALARS, *_SECTIONS]
        fix = f"valid: {', '.join(options)}"
    return JaxslmError(f"{where}: unknown {what} '{name}'; {fix}")


def _closest(key: str) -> str | None:
    """The valid dotted key nearest to `key`: by spelling, or `learning_rate` -> `lr`."""
    section, leaf = _split(key)
    if section in _SECTIONS:
        known = [f"{section}.{name}" for name in _FIELDS[section]]
    else:
        known = [*_SCALARS, *_SECTIONS]
        known += [f"{sec}.{name}" for sec, names in _FIELDS.items() for name in names]
    by_leaf: dict[str, str] = {}
    for full in known:
        by_leaf.setdefault(full.rpartition(".")[2], full)
    leaf = leaf.lower()
    match = difflib.get_close_matches(leaf, by_leaf, n=1, cutoff=0.5)
    if match:
        return by_leaf[match[0]]
    initials = "".join(word[:1] for word in leaf.split("_"))
    return by_leaf.get(initials)


def _split(key: str) -> tuple[str, str]:
    """('section', 'rest') of a dotted key; ('', key) without a dot."""
    section, _, leaf = key.partition(".")
    return (section, leaf) if leaf else ("", key)


def _accepts_str(hint: Any) -> bool:
    union = get_origin(hint) in (Union, types.UnionType)
    return hint is str or (union and str in get_args(hint))


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """`value` as the type `hint` (bool, int, float, str, a tuple of str or float, `X | None`)."""
    base = hint
    if get_origin(hint) in (Union, types.UnionType):
        if value is None:
            return None
        (base,) = (arg for arg in get_args(hint) if arg is not type(None))
    result = _convert(value, base)
    if result is _INVALID:
        expected = _describe(base) + (" or null" if base is not hint else "")
        raise JaxslmError(f"{where}: {key} must be {expected}, got {value!r}")
    numbers = result if isinstance(result, tuple) else (result,)
    if any(isinstance(n, float) and not math.isfinite(n) for n in numbers):
        unset = " (or null)" if base is not hint else ""
        raise JaxslmError(
            f"{where}: {key}={value!r} must be finite, not inf or nan: give a number{unset}"
        )
    return result


def _convert(value: Any, hint: Any) -> Any:
    if hint is bool or isinstance(value, bool):
        return value if hint is bool and isinstance(value, bool) else _INVALID
    if hint is str:
        return value if isinstance(value, str) else _INVALID
    if get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            return _INVALID
        items = [_convert(item, get_args(hint)[0]) for item in value]
        return _INVALID if _INVALID in items else tuple(items)
    number = _number(value)
    if number is None:
        return _INVALID
    if hint is float:
        return float(number)
    return int(number) if float(number).is_integer() else _INVALID


def _number(value: Any) -> int | float | None:
    """An int or float, also from text PyYAML leaves as a string (`1e-3`, `2e9`)."""
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _describe(hint: Any) -> str:
    if get_origin(hint) is tuple:
        return "a list of " + {str: "strings", float: "numbers"}[get_args(hint)[0]]
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]
