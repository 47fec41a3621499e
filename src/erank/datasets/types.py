"""The few types every loader returns: a :class:`Collection` of corpus, queries, qrels, candidates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Candidate", "Collection", "LoadStats", "Qrels", "Run"]

#: ``{qid: {docid: grade}}`` (the pytrec_eval shape).
Qrels = dict[str, dict[str, int]]
#: ``{qid: [Candidate, ...]}`` in rank order (first = best).
Run = dict[str, list["Candidate"]]


@dataclass
class Candidate:
    """One first-stage hit: a document id, its first-stage score and (where known) its text."""

    docid: str
    score: float
    text: str | None = None


@dataclass
class LoadStats:
    """What a loader noticed and tolerated (warned about) rather than refused."""

    unknown_qrels_queries: int = 0
    unknown_qrels_documents: int = 0
    empty_documents: int = 0
    duplicate_qrels: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Collection:
    """A test collection.

    ``corpus`` maps a document id to the text a reranker reads (``title + " " + text``, stripped).
    ``complete_corpus`` is False when the corpus holds only the documents of shipped candidate lists
    (TREC DL passages), so BM25/dense retrieval over it would not be the real first stage.
    ``candidates`` maps a first-stage name (``"BM25"``...) to a lazily loaded candidate file.
    ``beir_rule``: a retrieved document whose id equals the query id is ignored (BEIR's rule).
    ``excluded_ids``: per query, document ids removed from every run before evaluation (BRIGHT).
    ``relevance_level``: the lowest grade that binary measures (MAP, MRR, Recall) count as relevant
    (2 for TREC DL passage qrels, 1 elsewhere).
    ``instruction``: the task instruction name or text for rerankers; ``query_instructions`` a
    per-query instruction (FollowIR). ``changed`` is FollowIR's collection with the changed
    instructions and qrels.
    """

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: Qrels
    candidate_files: dict[str, Path] = field(default_factory=dict)
    complete_corpus: bool = True
    beir_rule: bool = False
    excluded_ids: dict[str, set[str]] = field(default_factory=dict)
    relevance_level: int = 1
    instruction: str = "beir"
    query_instructions: dict[str, str] = field(default_factory=dict)
    changed: Collection | None = None
    stats: LoadStats = field(default_factory=LoadStats)
    path: Path | None = None

    @property
    def judged_queries(self) -> list[str]:
        """Query ids that have judgements and text, in the order of ``queries``."""
        return [q for q in self.queries if q in self.qrels]

    def document_text(self, docid: str, fallback: str | None = None) -> str:
        if docid in self.corpus:
            return self.corpus[docid]
        if fallback is not None:
            return fallback
        raise KeyError(docid)

    def __repr__(self) -> str:
        return (
            f"Collection({self.name!r}, documents={len(self.corpus)}, queries={len(self.queries)}, "
            f"judged={len(self.judged_queries)}, first_stages={sorted(self.candidate_files)})"
        )
