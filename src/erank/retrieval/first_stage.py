"""The first stage as a run, and as a "reranker" row of an experiment."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from erank.datasets.loaders import load_candidates
from erank.datasets.types import Collection, Run
from erank.errors import InputError
from erank.types import DocumentScore, RerankResult, Usage, ranking_from_scores, to_documents

__all__ = ["first_stage_run", "FirstStageReranker"]

logger = logging.getLogger(__name__)


def first_stage_run(
    collection: Collection, first_stage: str | os.PathLike[str] = "bm25", k: int = 100
) -> Run:
    """Candidates for every query of ``collection``: ``"bm25"``, ``"dense"``, a shipped list, or a file.

    On a collection without a full corpus (TREC DL passages), ``"bm25"`` means the shipped BM25
    candidate list (Anserini's BM25, the list the field reranks), since BM25 over the candidate
    passages alone would not be a first stage.
    """
    name = str(first_stage)
    kind = name.lower() if name.lower() in ("bm25", "dense") else "file"
    if kind != "file" and not collection.complete_corpus:
        shipped = [n for n in collection.candidate_files if n.lower() == name.lower()]
        if not shipped:
            raise InputError(
                f"{collection.name} has no full corpus to run {name} over and ships no {name} candidate list; "
                f"pass a candidate file (shipped: {', '.join(sorted(collection.candidate_files)) or 'none'})"
            )
        logger.info("%s: using the shipped %s candidate list", collection.name, shipped[0])
        name, kind = shipped[0], "file"
    if kind == "bm25":
        from erank.retrieval.bm25 import BM25Retriever

        run = BM25Retriever(collection.corpus).retrieve(collection.queries, k=k)
    elif kind == "dense":
        from erank.retrieval.dense import DenseRetriever

        run = DenseRetriever(collection.corpus).retrieve(collection.queries, k=k)
    else:
        run = load_candidates(collection, name)
    return {q: cands[:k] for q, cands in run.items()}


class FirstStageReranker:
    """A "reranker" that keeps the first-stage order: a row of an experiment like any other.

    ``score(query, docs)`` returns a :class:`~erank.types.RerankResult` whose scores are the
    documents' ``first_stage_score`` (ties keep the input order).
    """

    method = None
    #: Each document keeps its own first-stage score.
    pointwise = True

    def __init__(self, name: str = "first-stage") -> None:
        self.name = name
        self.model_name = name
        self.mode = ""

    def identity(self) -> dict[str, Any]:
        """What determines the scores: the first stage's name (the scores are the documents')."""
        return {"class": "FirstStageReranker", "name": self.name}

    def score(
        self,
        query: str,
        docs: Sequence[Any],
        instruction: str | None = None,
        truncate_length: int | None = None,
    ) -> RerankResult:
        documents = to_documents(docs)
        scores = []
        for i, d in enumerate(documents):
            if d.first_stage_score is None:
                raise InputError(f"document {i} has no first_stage_score; the first stage needs it")
            scores.append(DocumentScore(index=i, score=d.first_stage_score))
        return RerankResult(
            query=query,
            instruction=instruction or "",
            documents=documents,
            scores=scores,
            ranking=ranking_from_scores([s.score for s in scores]),
            usage=Usage(),
            method="first-stage",
            model=self.name,
        )
