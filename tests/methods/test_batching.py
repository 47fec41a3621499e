"""The public batching interface (issue 14): prepare -> run -> finish, and score_many.

Units of several queries run in one ``run`` give exactly the scores of one ``score`` per query,
for ERank (one unit per document) and for a method that cannot split (one unit per query).
"""

from __future__ import annotations

import pytest

from erank import Reranker, RerankRequest
from erank.engines import create_engine
from erank.errors import InputError, PromptBudgetError

DOCS = ["Rust is a systems programming language.", "Green tea is a drink.", "Paris is in France."]


@pytest.fixture(scope="module")
def engine(tiny_qwen3_dir):  # noqa: ANN001, ANN201
    return create_engine("transformers", str(tiny_qwen3_dir))


@pytest.mark.parametrize("method", ["erank", "yesno", "listwise"])
def test_score_many_equals_one_score_per_query(engine, method: str) -> None:  # noqa: ANN001
    kwargs = {"mode": "direct"} if method == "erank" else {}
    r = Reranker(engine=engine, method=method, **kwargs)
    requests = [RerankRequest("rust", DOCS), RerankRequest("tea", DOCS[:2], "trec-dl")]
    many = r.score_many(requests)
    for req, res in zip(requests, many, strict=True):
        one = r.score(req.query, req.documents, req.instruction)
        assert res.ranking == one.ranking
        assert [s.score for s in res.scores] == pytest.approx([s.score for s in one.scores], abs=1e-5)
        assert res.usage.prompt_tokens == one.usage.prompt_tokens


def test_erank_splits_into_one_exact_unit_per_document(engine) -> None:  # noqa: ANN001
    r = Reranker(engine=engine, mode="direct")
    p = r.prepare("rust", DOCS, truncate_length=4)
    assert len(p.units) == len(DOCS) and p.exact_tokens
    assert p.prompt_tokens == sum(len(u.payload) for u in p.units)
    assert p.truncated == [len(engine.tokenizer.encode(d)) > 4 for d in DOCS] and any(p.truncated)
    with pytest.raises(PromptBudgetError) as exc:
        r.prepare("rust", DOCS, max_prompt_tokens=p.prompt_tokens - 1, truncate_length=4)
    assert exc.value.document == len(DOCS) - 1 and isinstance(exc.value, InputError)


def test_a_whole_query_unit_carries_its_own_error(engine) -> None:  # noqa: ANN001
    r = Reranker(engine=engine, method="yesno")
    good = r.prepare("rust", DOCS)
    bad = r.prepare("tea", DOCS)
    assert len(good.units) == 1 and not good.exact_tokens and good.prompt_tokens is None
    bad.units[0].payload = ("tea", bad.documents, bad.instruction, "not a length", False)
    results = r.run(good.units + bad.units)
    assert r.finish(good, results[:1]).ranking  # the other query of the batch is not lost
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever _score raised, raised by its own finish
        r.finish(bad, results[1:])


def test_instruction_cut_is_reported(engine) -> None:  # noqa: ANN001
    r = Reranker(engine=engine, mode="direct")
    long = " ".join(["judge the relevance of the passage carefully"] * 20)
    p = r.prepare("rust", DOCS, long, instruction_tokens=8)
    assert p.instruction_truncated and len(engine.tokenizer.encode(p.instruction)) <= 8
    assert not r.prepare("rust", DOCS, long).instruction_truncated
