"""rank_llm candidate files: ``[{query, hits: [{qid, docid, content, rank, score}]}]``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from erank.datasets.formats import check_query, read_json
from erank.datasets.types import Candidate, Run
from erank.errors import DataFormatError

__all__ = ["read_rankllm_candidates", "write_rankllm_candidates"]


def read_rankllm_candidates(path: str | Path) -> tuple[dict[str, str], Run]:
    """rank_llm candidate JSON ``[{query, hits: [{qid, docid, content, rank, score}]}]``.

    Returns ``({qid: query}, {qid: [Candidate with text]})``; hits are taken in their ``rank`` order.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of {{query, hits}} objects")
    queries: dict[str, str] = {}
    run: Run = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "hits" not in entry or "query" not in entry:
            raise DataFormatError(f"{path}: entry {i} is not a {{query, hits}} object")
        hits = entry["hits"]
        if not hits:
            continue
        qids = {str(h.get("qid")) for h in hits}
        if len(qids) != 1 or "None" in qids:
            raise DataFormatError(
                f"{path}: entry {i} has hits with missing or different qids {sorted(qids)[:3]}"
            )
        qid = qids.pop()
        if qid in run:
            raise DataFormatError(f"{path}: query {qid!r} appears twice (entries)")
        queries[qid] = check_query(qid, entry["query"], path, 0)
        ordered = sorted(enumerate(hits), key=lambda t: (t[1].get("rank", t[0] + 1), t[0]))
        cands = []
        seen: set[str] = set()
        for _, h in ordered:
            docid = str(h.get("docid", "")).strip()
            if not docid:
                raise DataFormatError(f"{path}: query {qid!r} has a hit without a docid")
            if docid in seen:
                raise DataFormatError(f"{path}: document {docid!r} appears twice for query {qid!r}")
            seen.add(docid)
            content = h.get("content")
            if not isinstance(content, str):
                raise DataFormatError(f"{path}: query {qid!r}, document {docid!r}: 'content' is not a string")
            cands.append(Candidate(docid, float(h.get("score", 0.0)), content))
        run[qid] = cands
    if not run:
        raise DataFormatError(f"{path}: no candidates found")
    return queries, run


def write_rankllm_candidates(
    queries: Mapping[str, str],
    run: Mapping[str, Sequence[Candidate]],
    path: str | Path,
    corpus: Mapping[str, str],
) -> None:
    """Write candidates in the rank_llm JSON format (text from ``c.text`` or ``corpus``)."""
    out = []
    for qid, cands in run.items():
        hits = [
            {
                "content": c.text if c.text is not None else corpus.get(c.docid, ""),
                "qid": qid,
                "docid": c.docid,
                "rank": r,
                "score": c.score,
            }
            for r, c in enumerate(cands, start=1)
        ]
        out.append({"query": queries[qid], "hits": hits})
    Path(path).write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
