"""Pieces the neighbouring methods share: pure parsing, window arithmetic, sorts, score assembly.

Everything here is free of any model: orders and choices come in through plain callables, so
the sorting logic is unit-tested with a scripted comparator and the parsing with strings.

>>> sliding_windows(100, 20, 10)[:2], sliding_windows(100, 20, 10)[-1]
([(80, 100), (70, 90)], (0, 20))
>>> parse_permutation("[2] > [3] > [2] > [9]", 3)
([1, 2, 0], True)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

from erank.errors import InputError
from erank.types import DocumentScore

__all__ = [
    "sliding_windows",
    "sliding_window_order",
    "parse_permutation",
    "format_passages",
    "scores_from_order",
    "single_token_ids",
    "probability_mass",
    "two_way_probability",
    "bubble_topk",
    "allpairs_scores",
    "heap_topk",
    "letter_labels",
    "check_positive",
]

_BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
_NUMBER = re.compile(r"\d+")


def check_positive(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` or an :class:`InputError` naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------- windows
def sliding_windows(n: int, window: int = 20, step: int = 10) -> list[tuple[int, int]]:
    """The ``(start, end)`` windows of a bottom-to-top pass over ``n`` ranked candidates.

    The first window ends at the bottom of the list; each next one moves ``step`` positions up;
    the last always starts at 0 so the top of the list is ranked too (RankGPT skips it when
    ``n - window`` is not a multiple of ``step``; we do not).

    >>> sliding_windows(25, 20, 10)
    [(5, 25), (0, 15)]
    >>> sliding_windows(8, 20, 10)
    [(0, 8)]
    """
    check_positive("window", window)
    check_positive("step", step)
    if n <= 0:
        return []
    out: list[tuple[int, int]] = []
    end = n
    while True:
        start = max(0, end - window)
        out.append((start, end))
        if start == 0:
            return out
        end -= step


def sliding_window_order(
    order: Sequence[int],
    window: int,
    step: int,
    rank_window: Callable[[list[int]], list[int]],
) -> list[int]:
    """Rerank ``order`` (item ids, best first) by sliding ``rank_window`` from bottom to top.

    ``rank_window(items)`` gets the items of one window in their current order and returns a
    permutation of positions (0-based, best first) of that list.
    """
    current = list(order)
    for start, end in sliding_windows(len(current), window, step):
        items = current[start:end]
        perm = rank_window(items)
        if sorted(perm) != list(range(len(items))):
            raise InputError(f"rank_window must return a permutation of 0..{len(items) - 1}, got {perm}")
        current[start:end] = [items[p] for p in perm]
    return current


# ---------------------------------------------------------------------------------------- parsing
def parse_permutation(text: str, n: int) -> tuple[list[int], bool]:
    """A full 0-based permutation of ``n`` items from a model's ``[3] > [1] > ...`` output.

    Repair as in RankGPT / rank_llm: identifiers out of ``1..n`` and repeats are dropped, the
    missing ones are appended in their previous order. Bracketed identifiers are read when there
    are any, else bare numbers. Returns ``(permutation, repaired)``; ``repaired`` is true when
    the output was not exactly a permutation of ``1..n``.

    >>> parse_permutation("[2] > [1] > [3]", 3)
    ([1, 0, 2], False)
    >>> parse_permutation("nonsense", 2)
    ([0, 1], True)
    """
    found = _BRACKETED.findall(text) or _NUMBER.findall(text)
    raw = [int(x) for x in found]
    seen: set[int] = set()
    perm: list[int] = []
    for x in raw:
        if 1 <= x <= n and x - 1 not in seen:
            seen.add(x - 1)
            perm.append(x - 1)
    perm += [i for i in range(n) if i not in seen]
    repaired = sorted(raw) != list(range(1, n + 1))
    return perm, repaired


def letter_labels(n: int) -> list[str]:
    """``A, B, C ...``: single-token identifiers (FIRST); at most 26."""
    if n > 26:
        raise InputError(
            f"at most 26 letter identifiers exist; the window has {n} documents (use window <= 26)"
        )
    return [chr(ord("A") + i) for i in range(n)]


def format_passages(texts: Sequence[str], labels: Sequence[str] | None = None) -> str:
    """``[1] text`` lines (or with the given labels), one per passage, blank line between."""
    labels = labels if labels is not None else [str(i + 1) for i in range(len(texts))]
    return "\n\n".join(f"[{lab}] {t}" for lab, t in zip(labels, texts, strict=True))


# ---------------------------------------------------------------------------------------- scores
def scores_from_order(order: Sequence[int], truncated: Sequence[bool]) -> list[DocumentScore]:
    """Per-document scores in input order consistent with ``order``: ``n - rank``."""
    n = len(order)
    if sorted(order) != list(range(n)):
        raise InputError(f"order must be a permutation of 0..{n - 1}")
    score = [0.0] * n
    for rank, i in enumerate(order):
        score[i] = float(n - rank)
    return [DocumentScore(index=i, score=score[i], truncated=truncated[i]) for i in range(n)]


def single_token_ids(encode: Callable[[str], list[int]], variants: Sequence[str]) -> list[int]:
    """The ids of those ``variants`` the tokenizer writes as exactly one token (deduplicated)."""
    out: list[int] = []
    for v in variants:
        ids = encode(v)
        if len(ids) == 1 and ids[0] not in out:
            out.append(ids[0])
    return out


def probability_mass(step: Mapping[int, float], ids: Sequence[int]) -> float:
    """Total probability of ``ids`` in a step of log-probabilities."""
    return sum(math.exp(step[i]) for i in ids if i in step)


def two_way_probability(step: Mapping[int, float], first: Sequence[int], second: Sequence[int]) -> float:
    """``P(first) / (P(first) + P(second))``; 0.5 when both are (numerically) zero.

    >>> round(two_way_probability({1: math.log(0.3), 2: math.log(0.1)}, [1], [2]), 2)
    0.75
    """
    a, b = probability_mass(step, first), probability_mass(step, second)
    if a + b <= 0.0:
        return 0.5
    return a / (a + b)


# ---------------------------------------------------------------------------------------- sorts
def bubble_topk(order: Sequence[int], k: int, prefer: Callable[[int, int], bool]) -> list[int]:
    """PRP-sliding: ``k`` bubble passes from the bottom to the top of ``order``.

    ``prefer(a, b)`` is true when item ``b`` (lower in the list) should move above ``a``. After
    pass ``p`` the item at position ``p`` is the best of positions ``p..n-1``.
    """
    cur = list(order)
    n = len(cur)
    for p in range(min(k, n - 1)):
        for j in range(n - 1, p, -1):
            if prefer(cur[j - 1], cur[j]):
                cur[j - 1], cur[j] = cur[j], cur[j - 1]
    return cur


def allpairs_scores(n: int, outcome: Callable[[int, int], float]) -> list[float]:
    """PRP-allpair: each item's total over all ``i < j`` pairs; ``outcome(i, j)`` is i's share (0..1)."""
    total = [0.0] * n
    for i in range(n):
        for j in range(i + 1, n):
            w = outcome(i, j)
            total[i] += w
            total[j] += 1.0 - w
    return total


def heap_topk(
    order: Sequence[int], k: int, choose: Callable[[list[int]], int], num_child: int = 3
) -> list[int]:
    """Setwise heap sort: the best ``k`` items of ``order`` in order, then the rest in input order.

    ``choose(items)`` returns the best of a set of items (a parent and up to ``num_child``
    children of a ``num_child``-ary max-heap). Heapify, then ``k`` extractions.
    """
    check_positive("num_child", num_child)
    heap = list(order)
    n = len(heap)

    def sift(root: int, size: int) -> None:
        while True:
            kids = [c for c in range(num_child * root + 1, num_child * root + 1 + num_child) if c < size]
            if not kids:
                return
            group = [heap[root]] + [heap[c] for c in kids]
            best = choose(group)
            if best not in group:
                raise InputError(f"choose returned {best!r}, which is not one of {group}")
            if best == heap[root]:
                return
            c = kids[group.index(best) - 1]
            heap[root], heap[c] = heap[c], heap[root]
            root = c

    for root in range((n - 2) // num_child, -1, -1):
        sift(root, n)
    top: list[int] = []
    size = n
    while size > 0 and len(top) < k:
        top.append(heap[0])
        size -= 1
        heap[0] = heap[size]
        if size > 1 and len(top) < k:
            sift(0, size)
    chosen = set(top)
    return top + [i for i in order if i not in chosen]
