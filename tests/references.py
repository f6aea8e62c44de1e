"""slamkit's data rules restated plainly: the references the interleaving, packing and
pipeline tests compare jaxslm against (docs/reference.md section 3)."""

import math
import random

import numpy as np


def runs(flags) -> list[tuple[bool, int, int]]:
    """(flag, first, stop) of each maximal run, by a plain walk."""
    out = []
    for index, flag in enumerate(flags):
        if out and out[-1][0] == flag:
            out[-1] = (flag, out[-1][1], index + 1)
        else:
            out.append((flag, index, index + 1))
    return out


def poisson_spans(n: int, start, length, eta: float = 0.3) -> np.ndarray:
    """slamkit's `select_spans_poisson` (slamkit/tokeniser/interleaving_tokeniser.py) over the
    draws `start(eligible words)` and `length()`: a span [first, min(first + length, n)) that
    overlaps a spoken word is drawn again; otherwise its words are spoken, count towards
    ceil(eta n) (the last span counted whole) and, with the word after it, are no longer
    eligible."""
    spoken = np.zeros(n, bool)
    eligible, goal, count = set(range(n)), math.ceil(n * eta), 0
    while count < goal and eligible:
        first = start(eligible)
        stop = min(first + length(), n)
        if spoken[first:stop].any():
            continue
        spoken[first:stop] = True
        count += stop - first
        eligible -= {*range(first, stop), stop}
    return spoken


def plain_poisson_rule(n: int, rnd: random.Random, eta: float = 0.3, lam: float = 10.0):
    """slamkit's rule written plainly with Python's random: starts by `choice`, lengths by
    Knuth's Poisson sampler (no cap on rejections)."""

    def knuth_poisson() -> int:
        length, product, limit = 0, rnd.random(), math.exp(-lam)
        while product > limit:
            length += 1
            product *= rnd.random()
        return length

    return poisson_spans(n, lambda eligible: rnd.choice(sorted(eligible)), knuth_poisson, eta)


def slamkit_spans(n: int, rs: np.random.RandomState, eta: float = 0.3, lam: float = 10.0):
    """slamkit's rule with numpy's legacy generator, drawn as slamkit draws."""
    return poisson_spans(
        n, lambda eligible: rs.choice(list(eligible)), lambda: rs.poisson(lam), eta
    )


def slamkit_chunks(tokens, chunk_size: int) -> list:
    """slamkit's `split_into_chunks` (slamkit/data/hf_dataset.py): consecutive slices of
    `chunk_size`; the model shifts labels within each, so a chunk's first token is no target."""
    return [tokens[i : i + chunk_size] for i in range(0, len(tokens), chunk_size)]
