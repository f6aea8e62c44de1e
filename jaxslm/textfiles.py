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


class UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (PyYAML keeps the last
    silently, so `{lr: 1e-3, lr: 2e-3}` or a second `budget:` section would drop the first).
    Keys brought in by a merge (`<<: *base`) may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = first_line.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error follows
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"the key {key!r} is given twice in one mapping, first on line {first}; "
                        "remove or rename one",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`, refusing duplicate keys (see `UniqueKeyLoader`)."""
    return yaml.load(text, Loader=UniqueKeyLoader)


def read_yaml_mapping(path: Path, what: str, expected: str) -> dict[Any, Any]:
    """The top-level mapping of the YAML file `path` ({} when empty). `what` names the file
    in errors ("config file"), `expected` says what its top level should hold."""
    text = read_utf8(path, what)
    try:
        tree = load_yaml(text)
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
