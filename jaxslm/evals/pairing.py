"""(positive, negative) pairs from item names, by slamkit's conventions for each task family.

- Numbered pairs (sWUGGY, sBLIMP, StoryCloze): within each subfolder, items are stably sorted
  by the integer before the first separator (`_`, or `+` for sBLIMP) and taken two at a time,
  the first of each two positive. Items sharing an integer keep their order: file order for
  JSONL; for folders (whose listing order slamkit leaves to the file system) positive-looking
  names (`correct`, `word`, `grammatical`, `pos`, ...) before negative-looking ones
  (`incorrect`, `nonword`, `ungrammatical`, `neg`, ...), then by name.
- SALMon: items `*_<index>_*` grouped by index, each group sorted by name, first positive.
- Cross-modal StoryCloze: `<base>_mutual`, `<base>_correct`, `<base>_incorrect`.
"""

from __future__ import annotations

import re
from collections import defaultdict

from jaxslm.errors import JaxslmError
from jaxslm.evals.items import Item

POSITIVE_WORDS = {"correct", "pos", "positive", "word", "grammatical", "real", "true", "good"}
NEGATIVE_WORDS = {
    "incorrect",
    "neg",
    "negative",
    "nonword",
    "ungrammatical",
    "fake",
    "false",
    "bad",
    "wrong",
}
Pair = tuple[Item, Item]


def numbered_pairs(items: list[Item], separator: str, from_folder: bool) -> list[Pair]:
    """Consecutive pairs of each subfolder after the stable sort by integer prefix."""
    pairs = []
    for group, members in _by_group(items).items():
        if from_folder:
            members = sorted(members, key=lambda item: (_role(item.base), item.base))
        members = sorted(members, key=lambda item: _integer_prefix(item, separator))
        if len(members) % 2:
            where = f"subfolder {group!r}" if group else "the top level"
            raise JaxslmError(
                f"{members[-1].origin}: {where} holds an odd number of items ({len(members)}); "
                "every positive needs its negative"
            )
        pairs += list(zip(members[0::2], members[1::2], strict=True))
    return pairs


def salmon_pairs(items: list[Item]) -> list[Pair]:
    """Pairs of one SALMon part: group by the index after the first `_`, sort by name."""
    groups: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        fields = item.base.split("_")
        if len(fields) < 2 or not fields[1].isdigit():
            raise JaxslmError(
                f"{item.origin}: SALMon names look like <prefix>_<index>_<rest>; no index here"
            )
        groups[int(fields[1])].append(item)
    pairs = []
    for index in sorted(groups):
        members = sorted(groups[index], key=lambda item: item.base)
        if len(members) != 2:
            raise JaxslmError(
                f"{members[0].origin}: SALMon sample {index} has {len(members)} files; each "
                "sample needs exactly two (positive first by name)"
            )
        pairs.append((members[0], members[1]))
    return pairs


def cross_modal_triples(items: list[Item]) -> list[tuple[Item, Item, Item]]:
    """(mutual prompt, correct ending, incorrect ending) per `<base>_correct` item."""
    by_name = {item.name: item for item in items}
    triples = []
    for name in sorted(by_name):
        if not name.endswith("_correct"):
            continue
        base = name[: -len("_correct")]
        missing = [f"{base}_{r}" for r in ("mutual", "incorrect") if f"{base}_{r}" not in by_name]
        if missing:
            raise JaxslmError(
                f"{by_name[name].origin}: cross-modal StoryCloze needs {' and '.join(missing)} "
                f"beside {name}"
            )
        triples.append((by_name[f"{base}_mutual"], by_name[name], by_name[f"{base}_incorrect"]))
    if not triples:
        raise JaxslmError(
            f"{items[0].origin}: no <base>_correct items; cross-modal StoryCloze needs "
            "<base>_mutual, <base>_correct and <base>_incorrect"
        )
    return triples


def _by_group(items: list[Item]) -> dict[str, list[Item]]:
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        groups[item.group].append(item)
    return dict(sorted(groups.items()))


def _integer_prefix(item: Item, separator: str) -> int:
    prefix = item.base.split(separator)[0]
    if not prefix.isdigit():
        raise JaxslmError(
            f"{item.origin}: name {item.base!r} does not start with an integer followed by "
            f"{separator!r}, as this task's pairs are numbered; move files that are not part "
            "of the benchmark (notes, READMEs) out of its folder"
        )
    return int(prefix)


def _role(name: str) -> int:
    """0 for positive-looking names, 2 for negative-looking ones, 1 otherwise."""
    words = set(re.split(r"[^a-z]+", name.lower()))
    if words & NEGATIVE_WORDS:
        return 2
    return 0 if words & POSITIVE_WORDS else 1
