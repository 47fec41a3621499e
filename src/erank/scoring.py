"""Answer parsing, the ERank scoring rule and hybrid fusion: pure functions, no model.

The scoring rule (spec 2.3): ``rank_score = s x P(s)`` where ``s`` is the integer answer and
``P(s)`` the model's probability of writing that score string. A score string may span several
tokens ("10" is "1" then "0" for digit-splitting tokenizers): ``P("10") = P("1") P("0" | "1")``
and, because "1" is a prefix of "10", ``P("1") = P("1") (1 - P("0" | "1"))``.

>>> round(hybrid_scores([
...     {"content": "excited", "first_stage_score": 46.7, "rank_score": 4.84},
...     {"content": "sad", "first_stage_score": 1.5, "rank_score": 0.0},
...     {"content": "peaceful", "first_stage_score": 2.3, "rank_score": 2.98}], alpha=0.2)[0]["hybrid_score"], 2)
1.18
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from erank.errors import InputError

__all__ = [
    "ScoreTokens",
    "ANSWER_STOP",
    "parse_answer",
    "reasoning_text",
    "label_probabilities",
    "rank_score",
    "expected_score",
    "hybrid_scores",
    "zscores",
]

#: where an ERank answer ends (generation stops there)
ANSWER_STOP = "</answer>"
_ANSWER = re.compile(r"<answer>\s*([+-]?\d+)\s*(?:</answer>|$)")


def reasoning_text(text: str) -> str:
    """The reasoning of an ERank generation: inside ``<think>...</think>``, else before ``</think>``
    or ``<answer>``."""
    start = text.find("<think>")
    end = text.find("</think>")
    if start >= 0 and end > start:
        return text[start + len("<think>") : end].strip()
    if end >= 0:
        return text[:end].strip()
    return text.split("<answer>")[0].strip()


def parse_answer(text: str, max_score: int = 10) -> tuple[int | None, int]:
    """The integer in the last ``<answer>N</answer>`` of ``text`` and where its digits start.

    Returns ``(None, -1)`` when there is no answer tag, no integer, or one outside
    ``0..max_score``: such an output is *unparsed* (spec 2.3).

    >>> parse_answer("<think>ok</think><answer>7</answer>")
    (7, 25)
    >>> parse_answer("<think>never closes")
    (None, -1)
    >>> parse_answer("<answer>11</answer>")
    (None, -1)
    """
    last = None
    for m in _ANSWER.finditer(text):
        last = m
    if last is None:
        return None, -1
    value = int(last.group(1))
    if value < 0 or value > max_score:
        return None, -1
    return value, last.start(1)


@dataclass(frozen=True)
class ScoreTokens:
    """How the score strings ``"0".."max"`` are tokenised by one tokenizer.

    ``sequences[s]`` is the token id sequence of the string ``str(s)``. Only sequences of one or
    two tokens are supported (every tokenizer in use writes 0..10 that way). ``branch`` is the
    first token that longer score strings start with (``"1"`` for ``"10"``), or ``None`` when
    every score is a single token.
    """

    sequences: tuple[tuple[int, ...], ...]

    @property
    def max_score(self) -> int:
        return len(self.sequences) - 1

    @property
    def first_tokens(self) -> list[int]:
        return sorted({seq[0] for seq in self.sequences})

    @property
    def branch(self) -> int | None:
        firsts = {seq[0] for seq in self.sequences if len(seq) == 2}
        if len(firsts) > 1:
            raise InputError("score strings that start with different multi-token prefixes are not supported")
        return next(iter(firsts), None)

    @property
    def second_tokens(self) -> list[int]:
        return sorted({seq[1] for seq in self.sequences if len(seq) == 2})

    @classmethod
    def from_tokenizer(cls, encode: Any, max_score: int = 10) -> ScoreTokens:
        """Build from ``encode(text) -> list[int]`` (no special tokens)."""
        seqs = []
        for s in range(max_score + 1):
            ids = tuple(encode(str(s)))
            if not 1 <= len(ids) <= 2:
                raise InputError(
                    f"the tokenizer writes the score {s} as {len(ids)} tokens; only 1 or 2 are supported"
                )
            seqs.append(ids)
        st = cls(tuple(seqs))
        _ = st.branch  # validate
        for seq in seqs:
            if len(seq) == 2 and (seq[0],) not in seqs:
                raise InputError(f"score tokens {seq}: its first token is not itself a score")
        return st


def label_probabilities(
    tokens: ScoreTokens, first: Mapping[int, float], second: Mapping[int, float] | None
) -> list[float]:
    """P(s) for every score s, from log-probabilities.

    ``first`` maps token id -> log-probability at the answer position; ``second`` maps token id ->
    log-probability at the next position given the ``branch`` token (``None`` when unknown, in
    which case multi-token scores get probability 0 and their prefix keeps its full mass).
    """
    p2_total = 0.0
    if second is not None:
        p2_total = sum(math.exp(second[t]) for t in tokens.second_tokens if t in second)
    out = []
    for seq in tokens.sequences:
        p1 = math.exp(first[seq[0]]) if seq[0] in first else 0.0
        if len(seq) == 2:
            p = p1 * math.exp(second[seq[1]]) if second is not None and seq[1] in second else 0.0
        elif tokens.branch is not None and seq[0] == tokens.branch:
            p = p1 * max(0.0, 1.0 - p2_total)
        else:
            p = p1
        out.append(p)
    return out


def rank_score(label: int | None, probability: float | None) -> float:
    """``s x P(s)``; an unparsed output (``label is None``) scores exactly 0.0."""
    if label is None or probability is None:
        return 0.0
    return float(label) * float(probability)


def expected_score(distribution: Sequence[float]) -> float:
    """The expectation of the score under the (renormalised) distribution over 0..max."""
    total = sum(distribution)
    if total <= 0:
        return 0.0
    return sum(s * p for s, p in enumerate(distribution)) / total


def zscores(values: Sequence[float]) -> list[float]:
    """z-scores with the population standard deviation; all zeros when the std is 0."""
    n = len(values)
    if n == 0:
        return []
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / n
    std = math.sqrt(var)
    if std == 0.0 or not math.isfinite(std):
        return [0.0] * n
    return [(v - mean) / std for v in values]


def hybrid_scores(
    results: Any,
    alpha: float = 0.2,
    *,
    first_stage_key: str = "first_stage_score",
    score_key: str = "rank_score",
    sort: bool = True,
) -> list[dict[str, Any]]:
    """Fuse the reranker's scores with the first stage's (spec 2.4).

    ``hybrid = alpha * z(first_stage) + (1 - alpha) * z(rank_score)`` per query, with population
    z-scores. ``results`` is the list of dicts ``rerank`` returns (or a
    :class:`~erank.types.RerankResult`). Returns new dicts with ``"hybrid_score"`` added, sorted by
    it (highest first, ties in input order) unless ``sort=False``.
    """
    if hasattr(results, "as_dicts"):
        results = results.as_dicts()
    if not isinstance(results, Sequence) or isinstance(results, (str, bytes)):
        raise InputError("hybrid_scores needs the list of result dicts that rerank() returns")
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha must be between 0 and 1, got {alpha}")
    rows = [dict(r) for r in results]
    for i, r in enumerate(rows):
        for key in (first_stage_key, score_key):
            v = r.get(key)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise InputError(f"result {i} has no numeric {key!r} (hybrid fusion needs both scores)")
    z_fs = zscores([float(r[first_stage_key]) for r in rows])
    z_rs = zscores([float(r[score_key]) for r in rows])
    for r, a, b in zip(rows, z_fs, z_rs, strict=True):
        r["hybrid_score"] = alpha * a + (1.0 - alpha) * b
    if sort:
        order = sorted(range(len(rows)), key=lambda i: -rows[i]["hybrid_score"])
        rows = [rows[i] for i in order]
    return rows
