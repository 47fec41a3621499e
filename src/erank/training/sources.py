"""The collections a training set is built from (BEIR folders, TREC DL), with their first stage.

The files are read by :mod:`erank.datasets` (the one home of the field's readers)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erank.datasets import read_beir_corpus, read_beir_queries, read_qrels, read_rankllm_candidates
from erank.errors import DataFormatError
from erank.prompts import resolve_instruction
from erank.training.config import SourceConfig

__all__ = ["Collection", "eval_row", "load_source", "read_jsonl"]

logger = logging.getLogger(__name__)


@dataclass
class Collection:
    """Queries, documents, graded judgements and a first-stage ranking per query."""

    name: str
    queries: dict[str, str]
    docs: dict[str, str]
    qrels: dict[str, dict[str, int]]
    candidates: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    instruction: str = ""
    max_grade: int = 1


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a malformed line raises :class:`DataFormatError` naming it."""
    rows = []
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"{p} does not exist")
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{p}, line {n}: not JSON ({exc.msg})") from exc
    return rows


def _read_beir(src: SourceConfig) -> Collection:
    root = src.path
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        if not (root / name).is_file():
            raise DataFormatError(f"source {src.name!r}: {root / name} is missing (BEIR layout expected)")
    docs = read_beir_corpus(root / "corpus.jsonl")
    queries = read_beir_queries(root / "queries.jsonl")
    return Collection(src.name, queries, docs, read_qrels(root / "qrels/test.tsv"))


def _bm25(coll: Collection, depth: int, qids: Sequence[str]) -> None:
    from erank.errors import require

    bm25s: Any = require("bm25s", "training", "BM25 candidates for BEIR-layout sources")
    ids = list(coll.docs)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([coll.docs[i] for i in ids], stopwords="en", show_progress=False), show_progress=False
    )
    k = min(depth, len(ids))
    res, scores = retriever.retrieve(
        bm25s.tokenize([coll.queries[q] for q in qids], stopwords="en", show_progress=False),
        k=k,
        show_progress=False,
    )
    for row, q in enumerate(qids):
        coll.candidates[q] = [(ids[int(j)], float(s)) for j, s in zip(res[row], scores[row], strict=True)]


def _read_trec_dl(src: SourceConfig) -> Collection:
    assert src.candidates is not None and src.qrels is not None
    cand_path = src.path / src.candidates
    qrels_path = src.path / src.qrels
    if not cand_path.is_file():
        raise DataFormatError(f"source {src.name!r}: candidate file {cand_path} is missing")
    if not qrels_path.is_file():
        raise DataFormatError(f"source {src.name!r}: qrels file {qrels_path} is missing")
    queries, run = read_rankllm_candidates(cand_path)
    docs = {c.docid: c.text or "" for cands in run.values() for c in cands}
    cands = {q: [(c.docid, c.score) for c in cs] for q, cs in run.items()}
    return Collection(src.name, queries, docs, read_qrels(qrels_path), cands)


def eval_row(source: str, coll: Collection, qid: str, depth: int) -> dict[str, Any]:
    """One held-out query of ``eval.jsonl``: its first-stage top ``depth`` with text, and its qrels."""
    cands = [
        {"docid": d, "content": coll.docs[d], "score": s}
        for d, s in coll.candidates.get(qid, [])[:depth]
        if d in coll.docs
    ]
    return {
        "qid": f"{source}/{qid}",
        "query": coll.queries[qid],
        "instruction": coll.instruction,
        "candidates": cands,
        "qrels": dict(coll.qrels.get(qid, {})),
    }


def load_source(src: SourceConfig) -> Collection:
    """Load one configured collection with its judgements and first-stage candidates."""
    coll = _read_beir(src) if src.format == "beir" else _read_trec_dl(src)
    coll.instruction = resolve_instruction(src.instruction)
    judged = [q for q in coll.queries if q in coll.qrels]
    if src.max_queries is not None:
        judged = judged[: src.max_queries]
    coll.queries = {q: coll.queries[q] for q in judged}
    if src.format == "beir":
        _bm25(coll, src.depth, judged)
    coll.max_grade = (
        src.max_grade or max((g for q in coll.qrels.values() for g in q.values()), default=1) or 1
    )
    return coll
