"""Metrics through ``ir_measures`` (pytrec_eval underneath), p-MRR, and the protocol rules.

Runs are ``{qid: [Candidate, ...]}`` in rank order. Before a run reaches ``ir_measures`` its scores
are made strictly decreasing (:func:`~erank.datasets.formats.strictly_decreasing`), so the given
order is the order evaluated (trec_eval would otherwise re-break ties by docid).

>>> from erank.datasets import Candidate
>>> qrels = {"q": {"a": 1, "b": 0}}
>>> evaluate_run({"q": [Candidate("b", 1.0), Candidate("a", 1.0)]}, qrels, ["RR@10"])["aggregate"]["RR@10"]
0.5
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from erank.datasets.formats import strictly_decreasing
from erank.datasets.types import Candidate, Qrels, Run
from erank.errors import InputError, require

__all__ = [
    "name_for_depth",
    "DEFAULT_METRICS",
    "parse_metric",
    "apply_protocol",
    "run_to_dict",
    "evaluate_run",
    "ndcg_at_10",
    "p_mrr",
    "p_mrr_per_query",
]

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ["nDCG@10", "MAP", "MRR@10", "R@100"]

#: friendly name -> ir_measures name (binary measures get ``(rel=N)`` added where needed)
_ALIASES = {"map": "AP", "mrr": "RR", "ndcg": "nDCG", "recall": "R", "p": "P"}
_BINARY = {"AP", "RR", "R", "P", "Success", "Rprec", "Bpref"}


def parse_metric(name: str, relevance_level: int = 1) -> Any:
    """An ``ir_measures`` measure from a name like ``nDCG@10``, ``MAP``, ``MRR@10``, ``R@100``.

    Binary measures count grades ``>= relevance_level`` as relevant (2 for TREC DL passages).
    """
    irm = require("ir_measures", "eval", "metrics")
    base, at, cut = name.partition("@")
    base = _ALIASES.get(base.lower(), base)
    text = base + (f"@{cut}" if at else "")
    if base in _BINARY and relevance_level != 1 and "(" not in base:
        text = f"{base}(rel={relevance_level})" + (f"@{cut}" if at else "")
    try:
        return irm.parse_measure(text)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - ir_measures raises several types
        raise InputError(f"unknown metric {name!r} ({exc}); try nDCG@10, MAP, MRR@10, R@100, P@10") from exc


def name_for_depth(name: str, depth: int) -> str:
    """The name a metric deserves on runs of at most ``depth`` documents per query.

    Recall at a cutoff beyond the depth is recall at the depth (``R@100`` of a top-20 rerank is
    ``R@20``), so it is named so; other measures keep their names (``nDCG@10``, ``MAP``).
    """
    base, at, cut = name.partition("@")
    if at and cut.isdigit() and int(cut) > depth and _ALIASES.get(base.lower(), base) == "R":
        return f"{base}@{depth}"
    return name


def apply_protocol(
    run: Mapping[str, Sequence[Candidate]],
    *,
    beir_rule: bool = False,
    excluded_ids: Mapping[str, set[str]] | None = None,
) -> tuple[Run, int]:
    """Drop what the benchmark's protocol ignores; returns ``(run, number of hits removed)``.

    BEIR's rule: a retrieved document whose id equals the query id is ignored. BRIGHT: each query's
    ``excluded_ids`` are removed.
    """
    out: Run = {}
    removed = 0
    for qid, cands in run.items():
        ex = excluded_ids.get(qid, set()) if excluded_ids else set()
        kept = [c for c in cands if not ((beir_rule and c.docid == qid) or c.docid in ex)]
        removed += len(cands) - len(kept)
        out[qid] = kept
    return out, removed


def run_to_dict(run: Mapping[str, Sequence[Candidate]]) -> dict[str, dict[str, float]]:
    """``{qid: {docid: score}}`` with strictly decreasing scores in the given order."""
    out: dict[str, dict[str, float]] = {}
    for qid, cands in run.items():
        scores = strictly_decreasing([c.score for c in cands])
        out[qid] = {c.docid: s for c, s in zip(cands, scores, strict=True)}
    return out


def evaluate_run(
    run: Mapping[str, Sequence[Candidate]],
    qrels: Qrels,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    relevance_level: int = 1,
    beir_rule: bool = False,
    excluded_ids: Mapping[str, set[str]] | None = None,
) -> dict[str, Any]:
    """Aggregate and per-query metrics of a run.

    Returns ``{"aggregate": {metric: mean}, "per_query": {metric: {qid: value}}, "queries": n,
    "removed_by_protocol": k}``. Means are over the queries present in both run and qrels (trec_eval's
    default); queries of the run without judgements are ignored, and a judged query whose candidate list
    is empty (every hit removed by the protocol) counts 0 rather than disappearing from the mean.
    """
    irm = require("ir_measures", "eval", "metrics")
    run_p, removed = apply_protocol(run, beir_rule=beir_rule, excluded_ids=excluded_ids)
    if removed and beir_rule:
        logger.info("protocol removed %d retrieved document(s) (BEIR rule / excluded ids)", removed)
    rd = run_to_dict(run_p)
    judged = {q: v for q, v in qrels.items() if q in rd}
    rd = {q: v for q, v in rd.items() if q in judged}
    if not rd:
        raise InputError("no query of the run has judgements in the qrels: check that the query ids match")
    measures = {m: parse_metric(m, relevance_level) for m in metrics}
    by_measure = {v: k for k, v in measures.items()}
    per_query: dict[str, dict[str, float]] = {m: {} for m in metrics}
    for row in irm.iter_calc(list(measures.values()), judged, rd):  # type: ignore[attr-defined]
        per_query[by_measure[row.measure]][row.query_id] = float(row.value)
    for m in metrics:  # a query with no value (no relevant doc for a binary measure) counts 0, like trec_eval
        for q in rd:
            per_query[m].setdefault(q, 0.0)
    aggregate = {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in per_query.items()}
    return {
        "aggregate": aggregate,
        "per_query": per_query,
        "queries": len(rd),
        "removed_by_protocol": removed,
    }


def _rank_of(cands: Sequence[Candidate], docid: str) -> int:
    for i, c in enumerate(cands, start=1):
        if c.docid == docid:
            return i
    return len(cands) + 1


def p_mrr_per_query(
    original_run: Mapping[str, Sequence[Candidate]],
    changed_run: Mapping[str, Sequence[Candidate]],
    original_qrels: Qrels,
    changed_qrels: Qrels,
) -> dict[str, float]:
    """FollowIR's p-MRR per query (Weller et al., 2024), from its definition.

    The documents that matter are those relevant under the original instruction (grade > 0) and not
    relevant under the changed one. For each, with ``R_og`` / ``R_new`` its rank (1-based; a
    document not retrieved ranks ``len(run) + 1``) in the run for the original / changed
    instruction, and ``MRR = 1 / R``: ``MRR_og / MRR_new - 1`` if ``R_og >= R_new`` (it moved up or
    stayed: <= 0), else ``1 - MRR_new / MRR_og`` (it moved down: > 0). A query's value is the mean over its documents; queries with none are
    skipped. +1: every such document fell far down; 0: no change; -1: they all rose.

    >>> from erank.datasets import Candidate
    >>> og = {"q": [Candidate("a", 2), Candidate("b", 1)]}
    >>> new = {"q": [Candidate("b", 2), Candidate("a", 1)]}
    >>> p_mrr_per_query(og, new, {"q": {"a": 1}}, {"q": {"a": 0}})
    {'q': 0.5}
    """
    out: dict[str, float] = {}
    for qid, og_grades in original_qrels.items():
        changed = [d for d, g in og_grades.items() if g > 0 and changed_qrels.get(qid, {}).get(d, 0) <= 0]
        if not changed or qid not in original_run or qid not in changed_run:
            continue
        vals = []
        for d in changed:
            r_og = _rank_of(original_run[qid], d)
            r_new = _rank_of(changed_run[qid], d)
            if r_og >= r_new:
                vals.append((1.0 / r_og) / (1.0 / r_new) - 1.0)
            else:
                vals.append(1.0 - (1.0 / r_new) / (1.0 / r_og))
        out[qid] = sum(vals) / len(vals)
    return out


def p_mrr(
    original_run: Mapping[str, Sequence[Candidate]],
    changed_run: Mapping[str, Sequence[Candidate]],
    original_qrels: Qrels,
    changed_qrels: Qrels,
) -> float:
    """Mean p-MRR over queries (see :func:`p_mrr_per_query`); 0.0 when no query has a changed document."""
    per_q = p_mrr_per_query(original_run, changed_run, original_qrels, changed_qrels)
    return sum(per_q.values()) / len(per_q) if per_q else 0.0


def ndcg_at_10(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]) -> float:
    """Mean nDCG@10 over the judged queries of a ``{qid: {docid: score}}`` run: documents taken in
    the order of their scores, through :func:`evaluate_run` (ir_measures, trec_eval semantics).
    The one nDCG@10 of the comparison table and the training validation.

    >>> round(ndcg_at_10({"q": {"a": 1, "b": 0}}, {"q": {"b": 2.0, "a": 1.0}}), 4)
    0.6309
    """
    ranked = {
        q: [Candidate(d, float(s)) for d, s in sorted(docs.items(), key=lambda kv: -kv[1])]
        for q, docs in run.items()
    }
    judged = {q: dict(r) for q, r in qrels.items() if q in ranked}
    if not judged:
        raise InputError("no evaluated query has judgements")
    return float(evaluate_run({q: ranked[q] for q in judged}, judged, ["nDCG@10"])["aggregate"]["nDCG@10"])
