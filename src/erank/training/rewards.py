"""GRPO rewards for ERank (spec 3.2): pure functions over all N x G scores of one query.

Inputs, per query: ``scores[d][g]`` the score rollout ``g`` of document ``d`` wrote (``None`` when
unparsable), ``positive[d]`` whether ``d`` is a positive. Every rollout gets a global rank
``phi`` among all parsed rollouts of the query, highest score first, ties taking the smallest rank
(:func:`global_ranks`). Output: ``rewards[d][g]``.

* :func:`reward_rr` - the listwise-derived r_RR. The paper does not publish its constants; here
  they are parameters (defaults in :class:`~erank.training.config.RewardConfig`):

  1. unparsable output: ``unparsable_penalty`` (default -1.0);
  2. positive document: ``pos_base + pos_scale / phi`` (default 0.5 + 0.5 / phi, so 1.0 at rank 1);
  3. negative ranked above a positive (``phi`` smaller than the largest ``phi`` of a parsed
     positive rollout): ``neg_above_penalty`` (default -0.5);
  4. negative below every positive: ``neg_max * (1 - ((s - s_ref) / max_score) ** 2)``, with
     ``s_ref`` the reference (SFT) model's score of that document (default 0 when none is given),
     ``neg_max`` default 0.5.

* :func:`reward_ndcg` - r_NDCG, in [-1, 1] with the default constants:

  1. unparsable output: ``unparsable_penalty``;
  2. positive rollout: its DCG discount ``1 / log2(phi + 1)`` divided by the discount of its ideal
     place ``j`` (``j - 1`` = the parsed positive rollouts with a strictly higher score, so ties
     take the smallest place as ``phi`` does): ``log2(j + 1) / log2(phi + 1)``. At most 1.0, since
     ``phi >= j``; exactly 1.0 when no negative rollout scores above it (all positive rollouts
     leading, tied or not, all get 1.0);
  3. negative ranked above ``k`` of the ``P`` positive rollouts: ``-k / P``;
  4. negative below every positive: the reference term of r_RR,
     ``neg_max * (1 - ((s - s_ref) / max_score) ** 2)``.

* :func:`reward_se` - r_SE: ``1 - ((s - t) / max_score) ** 2`` to the teacher score ``t``.

>>> global_ranks([[7, 7], [9, None]])
[[2, 2], [1, None]]
>>> reward_rr([[9, 9], [3, 8]], [True, False], ref_scores=[9, 3])
[[1.0, 1.0], [0.5, 0.375]]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["global_ranks", "reward_rr", "reward_ndcg", "reward_se", "compute_rewards", "group_advantages"]

Scores = Sequence[Sequence[float | int | None]]


def global_ranks(scores: Scores) -> list[list[int | None]]:
    """Rank of every parsed rollout among all rollouts of the query (1 = best; ties: smallest rank)."""
    flat = sorted((float(s) for row in scores for s in row if s is not None), reverse=True)
    first: dict[float, int] = {}
    for i, s in enumerate(flat):
        first.setdefault(s, i + 1)
    return [[None if s is None else first[float(s)] for s in row] for row in scores]


def _check(scores: Scores, positive: Sequence[bool]) -> None:
    if len(scores) != len(positive):
        from erank.errors import InputError

        raise InputError(f"{len(scores)} documents' scores but {len(positive)} positive flags")


def _positive_ranks(ranks: list[list[int | None]], positive: Sequence[bool]) -> list[int]:
    """The global ranks of the parsed rollouts of the positive documents."""
    return [r for d, row in enumerate(ranks) if positive[d] for r in row if r is not None]


def _reference_term(s: float, ref: float, neg_max: float, max_score: int) -> float:
    """A negative below every positive: ``neg_max * (1 - ((s - s_ref) / max_score) ** 2)``."""
    err = (s - ref) / max_score
    return neg_max * (1.0 - err * err)


def _each_rollout(
    scores: Scores,
    ranks: list[list[int | None]],
    positive: Sequence[bool],
    ref_scores: Sequence[float | None] | None,
    unparsable_penalty: float,
    reward: Callable[[bool, float, int, float], float],
) -> list[list[float]]:
    """``rewards[d][g]``: ``unparsable_penalty`` for an unparsable rollout, else
    ``reward(positive[d], s, phi, s_ref)`` (``s_ref`` 0 where no reference score is given)."""
    out: list[list[float]] = []
    for d, row in enumerate(scores):
        ref = ref_scores[d] if ref_scores is not None else None
        s_ref = 0.0 if ref is None else float(ref)
        rewards = []
        for s, phi in zip(row, ranks[d], strict=True):
            if s is None or phi is None:
                rewards.append(unparsable_penalty)
            else:
                rewards.append(reward(positive[d], float(s), phi, s_ref))
        out.append(rewards)
    return out


def reward_rr(
    scores: Scores,
    positive: Sequence[bool],
    ref_scores: Sequence[float | None] | None = None,
    *,
    unparsable_penalty: float = -1.0,
    pos_base: float = 0.5,
    pos_scale: float = 0.5,
    neg_above_penalty: float = -0.5,
    neg_max: float = 0.5,
    max_score: int = 10,
) -> list[list[float]]:
    """The listwise-derived reward r_RR (module docstring; spec 3.2).

    >>> reward_rr([[2], [5]], [True, False])          # the negative is above the positive
    [[0.75], [-0.5]]
    >>> reward_rr([[None], [0]], [True, False])       # unparsable positive; negative alone ranked
    [[-1.0], [0.5]]
    """
    _check(scores, positive)
    ranks = global_ranks(scores)
    pos_ranks = _positive_ranks(ranks, positive)
    worst_pos = max(pos_ranks) if pos_ranks else None

    def reward(pos: bool, s: float, phi: int, ref: float) -> float:
        if pos:
            return pos_base + pos_scale / phi
        if worst_pos is not None and phi < worst_pos:
            return neg_above_penalty
        return _reference_term(s, ref, neg_max, max_score)

    return _each_rollout(scores, ranks, positive, ref_scores, unparsable_penalty, reward)


def reward_ndcg(
    scores: Scores,
    positive: Sequence[bool],
    ref_scores: Sequence[float | None] | None = None,
    *,
    unparsable_penalty: float = -1.0,
    neg_max: float = 0.5,
    max_score: int = 10,
) -> list[list[float]]:
    """r_NDCG (module docstring): at most 1.0 for a positive rollout, ``neg_max`` for a negative.

    >>> reward_ndcg([[9], [1]], [True, False], ref_scores=[None, 1])
    [[1.0], [0.5]]
    >>> [round(x, 3) for x in reward_ndcg([[2], [5]], [True, False])[0]]   # a negative above it
    [0.631]
    >>> reward_ndcg([[10, 10], [3, 3]], [True, False], ref_scores=[None, 3])   # tied positives lead
    [[1.0, 1.0], [0.5, 0.5]]
    """
    _check(scores, positive)
    ranks = global_ranks(scores)
    pos_ranks = _positive_ranks(ranks, positive)
    pos_scores = [float(s) for d, row in enumerate(scores) if positive[d] for s in row if s is not None]
    n_pos = sum(len(row) for d, row in enumerate(scores) if positive[d])

    def reward(pos: bool, s: float, phi: int, ref: float) -> float:
        if pos:
            ideal = 1 + sum(1 for p in pos_scores if p > s)  # <= phi
            return math.log2(ideal + 1) / math.log2(phi + 1)
        beaten = sum(1 for r in pos_ranks if r > phi)
        if beaten:
            return -beaten / n_pos
        return _reference_term(s, ref, neg_max, max_score)

    return _each_rollout(scores, ranks, positive, ref_scores, unparsable_penalty, reward)


def reward_se(
    scores: Scores, targets: Sequence[float], *, unparsable_penalty: float = -1.0, max_score: int = 10
) -> list[list[float]]:
    """r_SE: the squared error to the teacher (target) score, as a reward in [0, 1].

    >>> reward_se([[10, 5, None]], [10])
    [[1.0, 0.75, -1.0]]
    """
    out = []
    for row, t in zip(scores, targets, strict=True):
        out.append(
            [unparsable_penalty if s is None else 1.0 - ((float(s) - float(t)) / max_score) ** 2 for s in row]
        )
    return out


def compute_rewards(
    kind: str,
    scores: Scores,
    positive: Sequence[bool],
    targets: Sequence[float],
    ref_scores: Sequence[float | None] | None,
    params: dict[str, float],
) -> list[list[float]]:
    """Dispatch on ``kind`` (``rr``, ``ndcg``, ``se``) with the constants of a RewardConfig."""
    pen = float(params.get("unparsable_penalty", -1.0))
    mx = int(params.get("max_score", 10))
    if kind == "rr":
        keys = ("pos_base", "pos_scale", "neg_above_penalty", "neg_max")
        kw = {k: float(params[k]) for k in keys if k in params}
        return reward_rr(scores, positive, ref_scores, unparsable_penalty=pen, max_score=mx, **kw)
    if kind == "ndcg":
        nkw = {"neg_max": float(params["neg_max"])} if "neg_max" in params else {}
        return reward_ndcg(scores, positive, ref_scores, unparsable_penalty=pen, max_score=mx, **nkw)
    if kind == "se":
        return reward_se(scores, targets, unparsable_penalty=pen, max_score=mx)
    from erank.errors import InputError

    raise InputError(f"unknown reward {kind!r}; use rr, ndcg or se")


def group_advantages(rewards: Sequence[float], eps: float = 1e-4) -> list[float]:
    """GRPO advantages of the G rollouts of one prompt: ``(r - mean) / (std + eps)``.

    >>> group_advantages([1.0, 1.0])
    [0.0, 0.0]
    >>> [round(a, 2) for a in group_advantages([0.0, 1.0])]
    [-1.0, 1.0]
    """
    n = len(rewards)
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)
    return [(r - mean) / (std + eps) for r in rewards]
