"""The scoring rule with hand-built log-probabilities, answer parsing and hybrid fusion."""

import math

import pytest

from erank.errors import InputError
from erank.scoring import (
    ScoreTokens,
    expected_score,
    hybrid_scores,
    label_probabilities,
    parse_answer,
    rank_score,
)
from erank.types import ranking_from_scores

# A digit-splitting tokenizer: "0".."9" are tokens 100..109, "10" is ("1", "0").
DIGITS = ScoreTokens(tuple((100 + s,) for s in range(10)) + ((101, 100),))
# A tokenizer that has "10" as a single token 110.
WHOLE = ScoreTokens(tuple((100 + s,) for s in range(11)))


def lp(probs):
    return {t: math.log(p) for t, p in probs.items()}


def test_ten_versus_one_uses_the_second_step():
    first = lp({100: 0.05, 101: 0.6, 105: 0.1})
    second = lp({100: 0.75})  # P("0" | "1")
    dist = label_probabilities(DIGITS, first, second)
    assert dist[10] == pytest.approx(0.6 * 0.75)
    assert dist[1] == pytest.approx(0.6 * 0.25)
    assert dist[5] == pytest.approx(0.1)
    assert dist[0] == pytest.approx(0.05)
    assert dist[2] == 0.0
    # s = 10 is the most probable score: rank_score = 10 x 0.45
    label = max(range(11), key=lambda s: dist[s])
    assert label == 10
    assert rank_score(label, dist[label]) == pytest.approx(4.5)


def test_one_wins_when_the_model_does_not_continue_with_zero():
    dist = label_probabilities(DIGITS, lp({101: 0.9}), lp({100: 0.1}))
    assert dist[1] == pytest.approx(0.81)
    assert dist[10] == pytest.approx(0.09)


def test_single_token_ten():
    dist = label_probabilities(WHOLE, lp({110: 0.7, 101: 0.2}), None)
    assert dist[10] == pytest.approx(0.7) and dist[1] == pytest.approx(0.2)


def test_score_zero_is_exactly_zero_and_unparsed_is_zero():
    assert rank_score(0, 0.99) == 0.0
    assert rank_score(None, None) == 0.0


def test_expected_score():
    assert expected_score([0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.5]) == pytest.approx(5.0)
    assert expected_score([0.0] * 11) == 0.0


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("<think>relevant</think><answer>7</answer>", 7),
        ("<think>x</think><answer>10</answer>", 10),
        ("<think>x</think><answer> 3 </answer>", 3),
        ("<think>x</think><answer>8", 8),  # budget hit right after the digits
        ("<think>never closes", None),
        ("<think>x</think><answer>eleven</answer>", None),
        ("<think>x</think><answer>11</answer>", None),
        ("<think>x</think><answer>-1</answer>", None),
        ("<think>x</think><answer>7.5</answer>", None),
        ("", None),
    ],
)
def test_parse_answer(text, label):
    assert parse_answer(text)[0] == label


def test_parse_answer_takes_the_last_answer_and_scale():
    assert parse_answer("<answer>2</answer> then <answer>9</answer>")[0] == 9
    assert parse_answer("<answer>3</answer>", max_score=3)[0] == 3
    assert parse_answer("<answer>4</answer>", max_score=3)[0] is None


def test_hybrid_matches_the_spec_example():
    rows = [
        {"content": "excited", "first_stage_score": 46.7, "rank_score": 4.84},
        {"content": "sad", "first_stage_score": 1.5, "rank_score": 0.0},
        {"content": "peaceful", "first_stage_score": 2.3, "rank_score": 2.98},
    ]
    out = hybrid_scores(rows, alpha=0.2, sort=False)
    assert [round(r["hybrid_score"], 2) for r in out] == [1.18, -1.19, 0.01]
    ranked = hybrid_scores(rows, alpha=0.2)
    assert [r["content"] for r in ranked] == ["excited", "peaceful", "sad"]
    assert "hybrid_score" not in rows[0]  # inputs untouched


def test_hybrid_with_constant_scores_is_zero_not_nan():
    rows = [{"first_stage_score": 1.0, "rank_score": 2.0}, {"first_stage_score": 1.0, "rank_score": 2.0}]
    assert [r["hybrid_score"] for r in hybrid_scores(rows, 0.5)] == [0.0, 0.0]


def test_hybrid_needs_both_scores():
    with pytest.raises(InputError, match="first_stage_score"):
        hybrid_scores([{"rank_score": 1.0}], 0.2)
    with pytest.raises(InputError, match="alpha"):
        hybrid_scores([], 1.5)


def test_ties_break_by_input_order():
    assert ranking_from_scores([0.5, 0.9, 0.5, 0.9]) == [1, 3, 0, 2]
