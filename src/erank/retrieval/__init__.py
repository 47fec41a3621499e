"""First-stage retrievers: BM25 (bm25s), dense (sentence-transformers), and an existing run.

Each returns a run ``{qid: [Candidate]}`` (rank order) and caches its index on disk under
``erank.models.cache_dir()``, keyed by the corpus, so a second use costs only the queries.

>>> from erank.datasets import load_collection                  # doctest: +SKIP
>>> from erank.retrieval import BM25Retriever                   # doctest: +SKIP
>>> cran = load_collection("../shared/data/cranfield")           # doctest: +SKIP
>>> run = BM25Retriever(cran.corpus).retrieve(cran.queries, k=100)  # doctest: +SKIP
"""

from __future__ import annotations

from erank.retrieval.bm25 import BM25Retriever
from erank.retrieval.dense import DenseRetriever, default_dense_model_path
from erank.retrieval.first_stage import FirstStageReranker, first_stage_run

__all__ = [
    "BM25Retriever",
    "DenseRetriever",
    "default_dense_model_path",
    "FirstStageReranker",
    "first_stage_run",
]
