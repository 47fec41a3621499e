"""Every method end to end with the real embedded default model (SmolLM2-135M) on one short query.

A 135M model is a weak reranker, so these tests assert what must hold for any model: a full
ranking, scores consistent with it, the cost each algorithm implies, real generated text where
the method generates, and answers forced or permutations repaired and counted where the model
does not follow the format. Budgets are tiny to keep the CPU time to seconds.
"""

from __future__ import annotations

import pytest

from erank import Reranker

pytestmark = pytest.mark.slow

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "Bananas are a yellow fruit.", "Rust is a programming language."]


@pytest.fixture(scope="module")
def default_reranker(smollm2_dir):
    return Reranker(method="yesno")


def _check(result, n=len(DOCS)):
    assert sorted(result.ranking) == list(range(n))
    ranked = [result.scores[i].score for i in result.ranking]
    assert ranked == sorted(ranked, reverse=True)
    assert result.model and result.usage.model_calls > 0 and result.usage.prompt_tokens > 0


def test_yesno_with_the_default_model_prefers_the_answering_passage(default_reranker):
    rows = default_reranker.rerank(QUERY, DOCS)
    score = {r["content"]: r["rank_score"] for r in rows}
    assert sorted(score) == sorted(DOCS)
    assert score[DOCS[0]] > score[DOCS[1]]  # Paris above bananas (greedy, deterministic)
    assert all(0.0 < v < 1.0 for v in score.values())


@pytest.mark.parametrize(
    "name,kwargs,calls",
    [
        ("erank-0-3", {}, 2),
        ("first", {}, 1),
        ("pairwise", {"top_k": 1}, 2),
        ("pairwise-allpairs", {}, 2),
        ("setwise", {"mode": "direct", "top_k": 1}, 1),
    ],
)
def test_single_pass_methods_end_to_end(default_reranker, name, kwargs, calls):
    r = Reranker(engine=default_reranker.engine, method=name, **kwargs)
    docs = DOCS if name in ("first", "setwise") else DOCS[:2]
    res = r.score(QUERY, [{"content": d, "id": str(i)} for i, d in enumerate(docs)])
    _check(res, len(docs))
    assert res.method == name and res.usage.model_calls == calls and res.usage.generated_tokens == 0
    assert [row["id"] for row in res.as_dicts()] == [str(i) for i in res.ranking]


def test_listwise_generates_and_parses_a_permutation(default_reranker):
    r = Reranker(engine=default_reranker.engine, method="listwise", max_new_tokens=16)
    res = r.score(QUERY, DOCS, return_reasoning=True)
    _check(res)
    assert res.usage.model_calls == 1 and 0 < res.usage.generated_tokens <= 16
    assert res.scores[0].output  # the model's own text is kept
    assert r.method.last_counters["windows"] == 1
    assert r.method.last_counters["repaired_windows"] in (0, 1)


def test_rank1_reasons_then_answers_true_or_false(default_reranker):
    r = Reranker(engine=default_reranker.engine, method="rank1", max_new_tokens=4)
    res = r.score(QUERY, DOCS[:2], return_reasoning=True)
    _check(res, 2)
    assert res.usage.model_calls == 4
    assert all(0.0 <= s.score <= 1.0 and s.reasoning is not None for s in res.scores)
    assert 0 < res.usage.generated_tokens <= 8
    forced = r.method.last_counters["forced_answers"]
    assert forced == sum(1 for s in res.scores if "</think>" not in (s.output or ""))


def test_groupwise_generates_scores_for_a_group(default_reranker):
    # setwise's reasoning mode generates the same way; it is covered on the tiny model
    # (tests/methods/test_mechanics.py) and its direct mode above, to keep this file short.
    g = Reranker(engine=default_reranker.engine, method="groupwise", max_new_tokens=12)
    res = g.score(QUERY, DOCS, return_reasoning=True)
    _check(res)
    assert res.usage.model_calls == 1 and 0 < res.usage.generated_tokens <= 12 and res.scores[0].output
    assert res.usage.unparsed == sum(1 for x in res.scores if x.label is None)
