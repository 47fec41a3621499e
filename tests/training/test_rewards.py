"""The GRPO rewards and the grouping sampler against hand-computed cases."""

from __future__ import annotations

import math
import random

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
    # ranks: 9->1, 6->2, 4->3. The positive rollout 9 is at its ideal place 1: 1.0; the rollout 4
    # would ideally be 2nd (one positive rollout above it) but is 3rd: log2(3) / log2(4)
    assert r[0] == [1.0, pytest.approx(math.log2(3) / 2)]
    assert r[1] == [-0.5, -1.0]  # outranks one of two positive rollouts; unparsable


def test_ndcg_negatives_below_every_positive_get_the_reference_term() -> None:
    # the negative's rollouts 0 and 4 (reference score 0) sit below both positive rollouts
    r = reward_ndcg([[10, 8], [0, 4]], [True, False], ref_scores=[None, 0])
    assert r[1] == [0.5, pytest.approx(0.5 * (1 - 0.16))]  # as r_RR: smooth in (s - ref)^2
    # the same closeness to the reference, whatever the reference is; no reference: 0
    assert reward_ndcg([[10], [4]], [True, False], ref_scores=[None, 4])[1] == [0.5]
    assert reward_ndcg([[10], [4]], [True, False])[1] == [pytest.approx(0.5 * (1 - 0.16))]
    assert reward_ndcg([[10], [4]], [True, False], ref_scores=[None, 4], neg_max=0.25)[1] == [0.25]
    # a negative above one positive rollout still loses that share, whatever its reference
    assert reward_ndcg([[10, 2], [4]], [True, False], ref_scores=[None, 4])[1] == [-0.5]


def test_ndcg_ties_never_exceed_the_maximum() -> None:
    # every positive rollout tied at the top: 1.0 each (the old mean-ideal normalisation gave 1.23)
    assert reward_ndcg([[10, 10, 10], [3, 3, 3]], [True, False])[0] == [1.0, 1.0, 1.0]
    # a positive tied with a negative shares its rank: still 1.0 at most
    assert reward_ndcg([[7, 7], [7, 1]], [True, False])[0] == [1.0, 1.0]
    rng = random.Random(5)
    for _ in range(300):
        n_docs, g = rng.randint(2, 6), rng.randint(1, 5)
        positive = [d == 0 or rng.random() < 0.3 for d in range(n_docs)]
        scores = [[rng.choice([None, 0, 3, 5, 5, 8, 10, 10]) for _ in range(g)] for _ in range(n_docs)]
        ref = [rng.choice([None, 0, 5, 10]) for _ in range(n_docs)]
        rewards = reward_ndcg(scores, positive, ref_scores=ref)
        flat = [x for row in rewards for x in row]
        assert max(flat) <= 1.0 and min(flat) >= -1.0, (scores, positive, rewards)
        parsed_neg = [s for d, row in enumerate(scores) if not positive[d] for s in row if s is not None]
        for d, row in enumerate(scores):
            if positive[d]:
                for s, x in zip(row, rewards[d], strict=True):
                    # exactly 1.0 when no negative rollout scored above it
                    if s is not None:
                        assert (x == 1.0) == all(n <= s for n in parsed_neg), (scores, positive, rewards)


def test_se_reward_and_dispatch() -> None:
    assert reward_se([[7, 3]], [7]) == [[1.0, pytest.approx(1 - 0.16)]]
    assert compute_rewards("se", [[7]], [True], [7], None, {}) == [[1.0]]
    assert compute_rewards("rr", [[7]], [True], [7], None, {"pos_base": 0.0, "pos_scale": 2.0}) == [[2.0]]
    # ndcg: the reference scores and the r_RR constants neg_max / max_score reach r_NDCG
    assert compute_rewards("ndcg", [[9], [4]], [True, False], [9, 0], [None, 4], {"neg_max": 0.3}) == [
        [1.0],
        [0.3],
    ]
    assert compute_rewards("ndcg", [[9], [0]], [True, False], [9, 0], [None, 5], {"max_score": 5}) == [
        [1.0],
        [0.0],
    ]
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
