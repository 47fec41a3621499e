"""``Method.pointwise`` is the one decision of "pointwise", and it is true to what methods do.

Evaluation caches a pointwise method's scores per document and scores them in chunks, merging the
results of separate calls; that is right only when a document's score does not depend on the
other documents. So every method that says it is pointwise must give each document the same score
alone as in a list, and evaluation must decide from the flag, not from a list of names.
"""

from __future__ import annotations

import pytest

from erank import Reranker
from erank.engines import create_engine
from erank.evaluation.runs import _is_pointwise
from erank.methods import METHODS, method_class
from erank.retrieval import FirstStageReranker
from erank.types import Scorer

QUERY = "what is the capital of France"
DOCS = [f"Document number {i} talks about topic {i}." for i in range(4)]
#: small arguments so generating methods stay cheap on the tiny model
SMALL = {
    "erank": {"mode": "direct"},
    "rank1": {"max_new_tokens": 4},
    "listwise": {"max_new_tokens": 8, "window": 4, "step": 2},
    "first": {"window": 4, "step": 2},
    "pairwise": {"top_k": 1},
    "setwise": {"max_new_tokens": 4, "top_k": 1},
    "groupwise": {"group_size": 3, "max_new_tokens": 8},
}


@pytest.fixture(scope="module")
def engine(tiny_qwen3_dir):
    e = create_engine("transformers", tiny_qwen3_dir)
    yield e
    e.close()


def test_pointwise_methods_are_the_independent_scorers():
    pointwise = {name for name in METHODS if method_class(name).pointwise}
    assert pointwise == {"erank", "erank-0-3", "yesno", "rank1"}


@pytest.mark.parametrize("name", sorted(n for n in METHODS if method_class(n).pointwise))
def test_a_pointwise_method_scores_a_document_alone_as_in_a_list(engine, name):
    reranker = Reranker(engine=engine, method=name, **SMALL.get(name, {}))
    together = [s.score for s in reranker.score(QUERY, DOCS, "beir").scores]
    alone = [reranker.score(QUERY, [d], "beir").scores[0].score for d in DOCS]
    assert alone == pytest.approx(together, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_evaluation_decides_pointwise_from_the_method(engine, name):
    reranker = Reranker(engine=engine, method=name, **SMALL.get(name, {}))
    assert isinstance(reranker, Scorer)
    assert reranker.pointwise is method_class(name).pointwise
    assert _is_pointwise(reranker) is method_class(name).pointwise


def test_the_first_stage_is_a_pointwise_scorer():
    assert isinstance(FirstStageReranker(), Scorer)
    assert _is_pointwise(FirstStageReranker()) is True
