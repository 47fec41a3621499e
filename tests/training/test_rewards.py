"""The GRPO rewards and the grouping sampler against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from erank.errors import InputError
from erank.training.rewards import (
    compute_rewards,
    global_ranks,
    group_advantages,
    reward_ndcg,
    reward_rr,
    reward_se,
)
from erank.training.sampler import QueryGroupSampler


def test_ties_take_the_smallest_rank_and_unparsable_has_none() -> None:
    # scores 8, 8, 5, None, 8, 2 -> the three 8s share rank 1, then 5 is 4th, 2 is 5th
    assert global_ranks([[8, 8, 5], [None, 8, 2]]) == [[1, 1, 4], [None, 1, 5]]


def test_rr_positive_at_the_top_negatives_below() -> None:
    # one positive (G=2) at ranks 1,1; a negative (G=2) scored 0 and 4 with reference score 0
    r = reward_rr([[10, 10], [0, 4]], [True, False], ref_scores=[None, 0])
    assert r[0] == [1.0, 1.0]  # 0.5 + 0.5 / 1
    assert r[1] == [0.5, pytest.approx(0.5 * (1 - 0.16))]  # smooth in (s - ref)^2


def test_rr_negative_above_a_positive_is_penalised() -> None:
    # positive scores 6 (rank 2) and 3 (rank 4); negative 7 (rank 1) and 4 (rank 3): both above the
    # positive rollout at rank 4, so both penalised; the positive rollouts get 0.5 + 0.5 / phi
    r = reward_rr([[6, 3], [7, 4]], [True, False], ref_scores=[None, 2], neg_above_penalty=-0.7)
    assert r[0] == [0.75, 0.625]
    assert r[1] == [-0.7, -0.7]


def test_rr_unparsable_outputs_get_the_penalty_and_leave_the_ranking() -> None:
    r = reward_rr([[None, 9], [None, 1]], [True, False], unparsable_penalty=-2.0)
    assert r == [[-2.0, 1.0], [-2.0, 0.5 * (1 - 0.01)]]


def test_rr_several_positives_each_by_its_own_rank() -> None:
    # two positives: 9 (rank 1) and 5 (rank 3); a negative 7 (rank 2) sits above the second positive
    r = reward_rr([[9], [5], [7]], [True, True, False])
    assert r == [[1.0], [pytest.approx(0.5 + 0.5 / 3)], [-0.5]]


def test_rr_constants_are_parameters() -> None:
    r = reward_rr([[9], [0]], [True, False], pos_base=2.0, pos_scale=1.0, neg_max=3.0)
    assert r == [[3.0], [3.0]]


def test_ndcg_reward() -> None:
    r = reward_ndcg([[9, 4], [6, None]], [True, False])
    # ranks: 9->1, 6->2, 4->3; ideal discount for 2 positive rollouts: (1 + 1/log2 3) / 2
    ideal = (1 + 1 / math.log2(3)) / 2
    assert r[0] == [pytest.approx(1 / ideal), pytest.approx((1 / math.log2(4)) / ideal)]
    assert r[1] == [-0.5, -1.0]  # outranks one of two positive rollouts; unparsable


def test_se_reward_and_dispatch() -> None:
    assert reward_se([[7, 3]], [7]) == [[1.0, pytest.approx(1 - 0.16)]]
    assert compute_rewards("se", [[7]], [True], [7], None, {}) == [[1.0]]
    assert compute_rewards("rr", [[7]], [True], [7], None, {"pos_base": 0.0, "pos_scale": 2.0}) == [[2.0]]
    with pytest.raises(InputError, match="unknown reward"):
        compute_rewards("bleu", [[7]], [True], [7], None, {})
    with pytest.raises(InputError, match="positive flags"):
        reward_rr([[1], [2]], [True])


def test_advantages_are_normalised_per_prompt() -> None:
    a = group_advantages([1.0, 0.0, 0.5, 0.5])
    assert sum(a) == pytest.approx(0.0, abs=1e-9)
    assert a[0] > a[2] == a[3] > a[1]
    assert group_advantages([0.3, 0.3, 0.3]) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("per_batch", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_sampler_keeps_every_query_whole_in_exactly_one_batch(per_batch: int, shuffle: bool) -> None:
    qids = ["a", "b", "a", "c", "b", "a", "d", "c", "e"]  # documents of a query are not adjacent
    s = QueryGroupSampler(qids, per_batch, shuffle=shuffle, seed=7)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        seen = [i for b in batches for i in b]
        assert sorted(seen) == list(range(len(qids)))  # every example exactly once
        for b in batches:
            qs = {qids[i] for i in b}
            assert len(qs) <= per_batch
            for q in qs:  # all documents of a query in this batch
                assert {i for i, x in enumerate(qids) if x == q} <= set(b)
        assert len(batches) == len(s)


def test_sampler_resume_skips_to_the_same_batches() -> None:
    s = QueryGroupSampler(list("aabbccdd"), 1, seed=3)
    s.set_epoch(2)
    full = list(s.batches())
    assert list(s.batches(skip=2)) == full[2:]
    with pytest.raises(InputError):
        QueryGroupSampler(["a"], 0)
