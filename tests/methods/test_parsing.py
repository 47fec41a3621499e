"""Pure parsing, window arithmetic and sorts: no model, scripted comparators."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from erank.errors import InputError
from erank.methods._common import (
    allpairs_scores,
    bubble_topk,
    format_passages,
    heap_topk,
    letter_labels,
    parse_permutation,
    scores_from_order,
    single_token_ids,
    sliding_window_order,
    sliding_windows,
    two_way_probability,
)
from erank.methods.first import order_from_logits
from erank.methods.groupwise import group_bounds, parse_group_scores
from erank.methods.pairwise import pair_outcome
from erank.methods.setwise import parse_choice
from erank.methods.yesno import split_reasoning

# ------------------------------------------------------------------------------------- windows


def test_sliding_windows_rankgpt_default_goes_bottom_to_top():
    w = sliding_windows(100, 20, 10)
    assert w[0] == (80, 100)
    assert w[-1] == (0, 20)
    assert len(w) == 9
    assert all(b - a == 20 for a, b in w)
    assert [a for a, _ in w] == sorted((a for a, _ in w), reverse=True)


def test_sliding_windows_always_cover_the_top_and_small_lists():
    assert sliding_windows(25, 20, 10) == [(5, 25), (0, 15)]
    assert sliding_windows(20, 20, 10) == [(0, 20)]
    assert sliding_windows(3, 20, 10) == [(0, 3)]
    assert sliding_windows(0, 20, 10) == []
    assert sliding_windows(10, 4, 2) == [(6, 10), (4, 8), (2, 6), (0, 4)]


@pytest.mark.parametrize("bad", [{"window": 0}, {"step": 0}, {"window": -3}])
def test_sliding_windows_reject_bad_sizes(bad):
    kwargs = {"window": 20, "step": 10, **bad}
    with pytest.raises(InputError):
        sliding_windows(10, **kwargs)


def test_sliding_window_with_a_perfect_window_ranker_brings_the_best_to_the_top():
    # Relevance is the item id; the first-stage order has the best items at the bottom.
    order = list(range(30))
    seen = []

    def rank_window(items):
        seen.append(list(items))
        return sorted(range(len(items)), key=lambda p: -items[p])

    out = sliding_window_order(order, 10, 5, rank_window)
    assert out[:5] == [29, 28, 27, 26, 25]  # the top step's worth is fully sorted
    assert sorted(out) == order
    assert len(seen) == len(sliding_windows(30, 10, 5))
    assert seen[0] == list(range(20, 30))  # the first window is the bottom of the list


def test_sliding_window_rejects_a_ranker_that_is_not_a_permutation():
    with pytest.raises(InputError, match="permutation"):
        sliding_window_order([0, 1, 2], 3, 1, lambda items: [0, 0, 1])


# ------------------------------------------------------------------------------------- permutations


def test_parse_permutation_well_formed_is_not_repaired():
    assert parse_permutation("[2] > [3] > [1]", 3) == ([1, 2, 0], False)
    assert parse_permutation(" [ 2 ]>[1] ", 2) == ([1, 0], False)


def test_parse_permutation_repairs_repeats_unknowns_and_missing():
    perm, repaired = parse_permutation("[3] > [3] > [7] > [1]", 4)
    assert perm == [2, 0, 1, 3]  # repeats and 7 dropped, 2 and 4 appended in their previous order
    assert repaired
    assert parse_permutation("", 3) == ([0, 1, 2], True)
    assert parse_permutation("[0] > [1]", 2) == ([0, 1], True)


def test_parse_permutation_falls_back_to_bare_numbers():
    assert parse_permutation("2 > 1 > 3", 3) == ([1, 0, 2], False)


def test_parse_permutation_always_returns_a_permutation_on_random_text():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 25)
        text = " > ".join(f"[{rng.randint(-2, 30)}]" for _ in range(rng.randint(0, 30)))
        perm, _ = parse_permutation(text, n)
        assert sorted(perm) == list(range(n))


def test_format_passages_and_letters():
    assert format_passages(["a", "b"]) == "[1] a\n\n[2] b"
    assert format_passages(["a"], ["A"]) == "[A] a"
    assert letter_labels(3) == ["A", "B", "C"]
    with pytest.raises(InputError, match="26"):
        letter_labels(27)


# ------------------------------------------------------------------------------------- scores


def test_scores_from_order_is_consistent_with_the_order():
    scores = scores_from_order([2, 0, 1], [False, True, False])
    assert [s.score for s in scores] == [2.0, 1.0, 3.0]
    assert scores[1].truncated
    with pytest.raises(InputError):
        scores_from_order([0, 0], [False, False])


def test_two_way_probability_and_single_tokens():
    step = {1: math.log(0.2), 2: math.log(0.05), 3: math.log(0.05)}
    assert two_way_probability(step, [1], [2, 3]) == pytest.approx(0.2 / 0.3)
    assert two_way_probability({}, [1], [2]) == 0.5
    enc = {"yes": [5], " yes": [6, 7], "Yes": [5]}.__getitem__
    assert single_token_ids(enc, ["yes", " yes", "Yes"]) == [5]


def test_order_from_logits_sorts_by_label_logprob():
    assert order_from_logits({7: -2.0, 8: -0.1, 9: -5.0}, [7, 8, 9]) == [1, 0, 2]
    assert order_from_logits({7: -1.0}, [7, 8]) == [0, 1]  # a missing label ranks last


# ------------------------------------------------------------------------------------- pairwise


def test_pair_outcome_needs_both_orders_to_agree():
    assert pair_outcome(0.8, 0.3) == 1.0
    assert pair_outcome(0.3, 0.8) == 0.0
    assert pair_outcome(0.8, 0.8) == 0.5  # position bias: "A" wins whatever is shown
    assert pair_outcome(0.3, 0.3) == 0.5


def test_bubble_topk_with_a_scripted_comparator_sorts_the_top_k():
    rng = random.Random(1)
    rel = list(range(12))
    rng.shuffle(rel)
    calls = []

    def prefer(upper, lower):
        calls.append((upper, lower))
        return rel[lower] > rel[upper]

    out = bubble_topk(range(12), 3, prefer)
    best = sorted(range(12), key=lambda i: -rel[i])
    assert out[:3] == best[:3]
    assert sorted(out) == list(range(12))
    assert len(calls) == 11 + 10 + 9  # PRP-sliding-3 cost


def test_bubble_topk_k_larger_than_list_is_a_full_sort():
    rel = [3, 1, 4, 1.5, 9, 2.6]
    out = bubble_topk(range(6), 99, lambda u, lo: rel[lo] > rel[u])
    assert out == sorted(range(6), key=lambda i: -rel[i])


def test_allpairs_scores_counts_wins_and_ties():
    rel = [0.1, 0.9, 0.5]

    def outcome(i, j):
        return 1.0 if rel[i] > rel[j] else 0.0

    assert allpairs_scores(3, outcome) == [0.0, 2.0, 1.0]
    assert allpairs_scores(2, lambda i, j: 0.5) == [0.5, 0.5]


# ------------------------------------------------------------------------------------- setwise


@pytest.mark.parametrize("n,k,c", [(20, 10, 3), (7, 7, 2), (1, 1, 3), (13, 4, 1), (9, 20, 8)])
def test_heap_topk_with_a_scripted_choice_returns_the_true_top_k(n, k, c):
    rng = random.Random(n * 100 + k)
    rel = [rng.random() for _ in range(n)]
    sets = []

    def choose(items):
        sets.append(len(items))
        return max(items, key=lambda i: rel[i])

    out = heap_topk(range(n), k, choose, num_child=c)
    best = sorted(range(n), key=lambda i: -rel[i])
    assert out[: min(k, n)] == best[: min(k, n)]
    assert sorted(out) == list(range(n))
    assert all(2 <= s <= c + 1 for s in sets)
    chosen = set(out[:k])
    assert out[k:] == [i for i in range(n) if i not in chosen]  # the rest keep first-stage order


def test_heap_topk_rejects_a_choice_outside_the_set():
    with pytest.raises(InputError, match="not one of"):
        heap_topk(range(5), 2, lambda items: 99)


def test_parse_choice():
    assert parse_choice("<think>x</think> <answer>[3]</answer>", 4) == 2
    assert parse_choice("<answer>2</answer>", 4) == 1
    assert parse_choice("<answer>[1]</answer> then <answer>[4]</answer>", 4) == 3
    assert parse_choice("I pick [2]", 4) is None
    assert parse_choice("<answer>[0]</answer>", 4) is None


# ------------------------------------------------------------------------------------- groupwise


def test_parse_group_scores():
    assert parse_group_scores("[1]: 7\n[2]: 3\n[3]: 10", 3, 10) == [7, 3, 10]
    assert parse_group_scores("[2] score: 4\n[1] = 9\n[9]: 1\n[3]: 11", 3, 10) == [9, 4, None]
    assert parse_group_scores("[1]: 2\n[1]: 8", 1, 10) == [2]
    assert parse_group_scores("nothing", 2, 10) == [None, None]


def test_group_bounds_cover_every_document_once():
    for n, g in itertools.product(range(0, 30), range(1, 12)):
        bounds = group_bounds(n, g)
        covered = [i for s, e in bounds for i in range(s, e)]
        assert covered == list(range(n))
        assert all(e - s <= g for s, e in bounds)


def test_split_reasoning():
    assert split_reasoning("a b</think> true") == (True, "a b")
    assert split_reasoning("a b c") == (False, "a b c")
