"""Reading user-written text files (configs, tables) with one-line errors: the file, the line
of a byte that is not UTF-8, and what the file should hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from jaxslm.errors import JaxslmError


def read_utf8(path: Path, what: str) -> str:
    """The text of `path` (a UTF-8 byte-order mark dropped); a file that cannot be read or is
    not UTF-8 is a JaxslmError naming the file, and the line of the first bad byte."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise JaxslmError(f"{path}: cannot read the {what} ({err.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise JaxslmError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the "
            f"{what} as UTF-8"
        ) from None


def read_yaml_mapping(path: Path, what: str, expected: str) -> dict[Any, Any]:
    """The top-level mapping of the YAML file `path` ({} when empty). `what` names the file
    in errors ("config file"), `expected` says what its top level should hold."""
    text = read_utf8(path, what)
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise JaxslmError(f"{path}{where}: not valid YAML ({problem})") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise JaxslmError(
            f"{path}: the {what} must be a YAML mapping of {expected}, but it holds a "
            f"{type(tree).__name__} ({_preview(tree)})"
        )
    return tree


def _preview(value: Any, limit: int = 40) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
