"""Test collections: loaders and writers for the file formats of the field.

>>> from erank.datasets import load_collection, load_candidates      # doctest: +SKIP
>>> dl20 = load_collection("../shared/data/trec-dl20-passage")        # doctest: +SKIP
>>> bm25 = load_candidates(dl20, "BM25")                              # {qid: [Candidate]}  # doctest: +SKIP
"""

from __future__ import annotations

from erank.datasets.formats import (
    read_beir_corpus,
    read_beir_queries,
    read_qrels,
    read_run,
    read_topics,
    read_trec_docs,
    strictly_decreasing,
    write_run,
)
from erank.datasets.loaders import (
    load_beir,
    load_bright,
    load_candidates,
    load_collection,
    load_followir,
    load_trec,
)
from erank.datasets.rankllm import read_rankllm_candidates, write_rankllm_candidates
from erank.datasets.types import Candidate, Collection, LoadStats, Qrels, Run

__all__ = [
    "Candidate",
    "Collection",
    "LoadStats",
    "Qrels",
    "Run",
    "load_collection",
    "load_candidates",
    "load_beir",
    "load_trec",
    "load_bright",
    "load_followir",
    "read_beir_corpus",
    "read_beir_queries",
    "read_qrels",
    "read_topics",
    "read_trec_docs",
    "read_run",
    "write_run",
    "strictly_decreasing",
    "read_rankllm_candidates",
    "write_rankllm_candidates",
]
