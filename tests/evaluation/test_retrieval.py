"""First-stage retrieval: bm25s with an on-disk index cache, dense with cached embeddings."""

from __future__ import annotations

import pytest

from erank.datasets import load_collection
from erank.errors import InputError
from erank.retrieval import (
    BM25Retriever,
    DenseRetriever,
    FirstStageReranker,
    default_dense_model_path,
    first_stage_run,
)

CORPUS = {
    "d1": "The cat sat on the mat in the sun.",
    "d2": "Stock markets fell sharply on Monday after the bank report.",
    "d3": "Kittens and cats are small domestic felines.",
    "d4": "Dogs bark at the postman every morning.",
}


def test_bm25_index_is_cached_on_disk_keyed_by_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("ERANK_CACHE", str(tmp_path))
    first = BM25Retriever(CORPUS)
    assert not first.loaded_from_cache and (first.cache_path() / ".complete").exists()
    run1 = first.retrieve({"q": "cats"}, k=3)
    again = BM25Retriever(CORPUS)
    assert again.loaded_from_cache
    assert [(c.docid, c.score) for c in again.retrieve({"q": "cats"}, k=3)["q"]] == [
        (c.docid, c.score) for c in run1["q"]
    ]
    changed = BM25Retriever({**CORPUS, "d5": "a new document"})
    assert not changed.loaded_from_cache and changed.key != first.key
    assert {c.docid for c in run1["q"]} == {"d1", "d3"}  # stemming: "cats" matches "cat" and "cats"
    assert all(c.score > 0 for c in run1["q"])


def test_bm25_bad_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("ERANK_CACHE", str(tmp_path))
    with pytest.raises(InputError, match="corpus is empty"):
        BM25Retriever({})
    with pytest.raises(InputError, match="k must be positive"):
        BM25Retriever(CORPUS).retrieve({"q": "cat"}, k=0)


def test_dense_default_model_from_package_and_embedding_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ERANK_CACHE", str(tmp_path))
    assert (default_dense_model_path() / "config.json").exists()
    r = DenseRetriever(CORPUS)
    assert not r.loaded_from_cache
    top = r.retrieve({"q": "kitten on a rug", "m": "finance news about shares"}, k=2)
    assert top["q"][0].docid in ("d1", "d3") and top["m"][0].docid == "d2"
    assert top["q"][0].score >= top["q"][1].score
    again = DenseRetriever(CORPUS)
    assert again.loaded_from_cache
    assert [c.docid for c in again.retrieve({"q": "kitten on a rug"}, k=2)["q"]] == [
        c.docid for c in top["q"]
    ]


def test_first_stage_run_on_dl20_uses_the_shipped_bm25_list(shared_data):
    coll = load_collection(shared_data / "trec-dl20-passage")
    run = first_stage_run(coll, "bm25", k=20)
    assert len(run) == 54 and all(len(v) == 20 for v in run.values())
    with pytest.raises(InputError, match="no full corpus to run dense"):
        first_stage_run(load_collection(shared_data / "trec-dl20-passage"), "dense")
    with pytest.raises(InputError, match="neither a file nor a shipped candidate list"):
        first_stage_run(coll, "SPLADE_typo")


def test_first_stage_reranker_keeps_the_first_stage_order():
    res = FirstStageReranker().score(
        "q", [{"content": "a", "first_stage_score": 1.0}, {"content": "b", "first_stage_score": 3.0}]
    )
    assert res.ranking == [1, 0] and [s.score for s in res.scores] == [1.0, 3.0]
    with pytest.raises(InputError, match="no first_stage_score"):
        FirstStageReranker().score("q", ["plain text"])
