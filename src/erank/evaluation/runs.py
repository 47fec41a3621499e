"""The runs of an experiment: one reranker over the first stage's candidates (with the score
cache), hybrid fusion with the first stage, and the first N queries by id."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from erank.datasets.types import Candidate, Collection, Run
from erank.errors import InputError
from erank.evaluation.cache import ScoreCache, reranker_identity
from erank.progress import progress_bar
from erank.prompts import resolve_instruction
from erank.retrieval.first_stage import FirstStageReranker
from erank.scoring import hybrid_scores
from erank.types import Scorer, ranking_from_scores

__all__ = ["first_queries", "hybrid_run", "rerank_run"]

logger = logging.getLogger(__name__)


def first_queries(qids: Sequence[str], n: int | None) -> list[str]:
    """The first ``n`` of ``qids`` by id, whatever order a file lists them in: numeric ids in
    numeric order, then the others alphabetically (:func:`erank.batch.rows.qid_sort_key`, the order
    of batch run files too). What ``--queries N`` means in every command; ``None``: all of them."""
    from erank.batch.rows import qid_sort_key

    ordered = sorted(qids, key=qid_sort_key)
    return ordered if n is None else ordered[:n]


def _is_pointwise(reranker: Scorer) -> bool:
    """Whether a document's score is independent of the others: then scores are cached per
    document and computed in chunks (a killed run loses at most one chunk); otherwise per query.

    Decided by the scorer's ``pointwise`` (:attr:`erank.Reranker.pointwise`, which is
    :attr:`erank.methods.Method.pointwise`); a scorer that does not say is treated as listwise.
    """
    flag = getattr(reranker, "pointwise", None)
    if isinstance(flag, bool):
        return flag
    method = getattr(reranker, "method", None)
    flag = getattr(method, "pointwise", None)
    return flag if isinstance(flag, bool) else False


def rerank_run(
    collection: Collection,
    candidates: Mapping[str, Sequence[Candidate]],
    reranker: Scorer,
    *,
    qids: Sequence[str] | None = None,
    top_k: int = 100,
    instruction: str | None = None,
    truncate_length: int | None = 2048,
    cache: ScoreCache | None = None,
    chunk_size: int = 10,
    progress: bool = False,
    desc: str = "rerank",
) -> tuple[Run, dict[str, float], int]:
    """Rerank the top ``top_k`` candidates of every query with ``reranker``.

    ``reranker`` is a :class:`~erank.types.Scorer` (an :class:`erank.Reranker` or
    :class:`~erank.retrieval.FirstStageReranker`): its ``identity()`` keys the cache and its
    ``pointwise`` decides whether scores are cached per document or per query.
    Returns ``(run, latency, unparsed)``; ``latency`` has ``seconds_per_query``, ``pairs_per_second``,
    ``pairs``, ``computed_pairs``, ``cached_pairs``, ``seconds`` (model time, cached pairs included at
    the time they took when computed) and ``wall_seconds`` (this call).
    """
    wall = time.perf_counter()
    instr = resolve_instruction(instruction if instruction is not None else collection.instruction, "beir")
    ident = reranker_identity(reranker)
    pointwise = _is_pointwise(reranker)
    is_first = isinstance(reranker, FirstStageReranker)
    qids = list(qids) if qids is not None else [q for q in collection.queries if q in candidates]
    run: Run = {}
    total_seconds = 0.0
    pairs = computed = cached_n = unparsed = 0
    total_pairs = sum(len(list(candidates.get(q, []))[:top_k]) for q in qids)
    # One bar per system, counting (query, document) pairs: rich, with an ETA, on a terminal only.
    with progress_bar(total_pairs, desc, unit="pairs", enabled=None if progress else False) as bar:
        for qid in qids:
            query = collection.queries[qid]
            cands = list(candidates.get(qid, []))[:top_k]
            if not cands:
                run[qid] = []
                continue
            texts = [collection.corpus.get(c.docid, c.text if c.text is not None else "") for c in cands]
            docs: list[dict[str, Any]] = [
                {"content": t, "id": c.docid, "first_stage_score": float(c.score)}
                for c, t in zip(cands, texts, strict=True)
            ]
            if is_first:
                scores = [float(c.score) for c in cands]
                run[qid] = [Candidate(cands[i].docid, scores[i]) for i in ranking_from_scores(scores)]
                pairs += len(cands)
                bar.advance(len(cands))
                continue
            context = (
                "" if pointwise else hashlib.sha256("\x00".join(c.docid for c in cands).encode()).hexdigest()
            )
            keys = [ScoreCache.key(ident, instr, truncate_length, query, t, context) for t in texts]
            got = cache.get_many(keys) if cache is not None else {}
            values: list[float | None] = [got[k][0] if k in got else None for k in keys]
            secs = [got[k][1] if k in got else 0.0 for k in keys]
            cached_n += sum(v is not None for v in values)
            bar.advance(sum(v is not None for v in values))
            missing = [i for i, v in enumerate(values) if v is None]
            if missing and not pointwise:
                missing = list(range(len(docs)))  # the whole list is one unit
            step = chunk_size if pointwise else max(1, len(missing))
            for start in range(0, len(missing), step):
                idx = missing[start : start + step]
                t0 = time.perf_counter()
                res = reranker.score(query, [docs[i] for i in idx], instr, truncate_length)
                dt = time.perf_counter() - t0
                if len(res.scores) != len(idx):
                    raise InputError(f"reranker returned {len(res.scores)} scores for {len(idx)} documents")
                unparsed += int(getattr(res.usage, "unparsed", 0) or 0)
                rows = []
                for j, i in enumerate(idx):
                    sc = float(res.scores[j].score)
                    values[i] = sc
                    secs[i] = dt / len(idx)
                    rows.append((keys[i], sc, dt / len(idx)))
                computed += len(idx)
                bar.advance(len(idx))
                if cache is not None:
                    cache.put_many(rows)
            final = [float(v) if v is not None else 0.0 for v in values]
            total_seconds += sum(secs)
            pairs += len(cands)
            run[qid] = [Candidate(cands[i].docid, final[i]) for i in ranking_from_scores(final)]
    n_q = max(1, sum(1 for q in run if run[q]))
    latency = {
        "queries": float(len(run)),
        "pairs": float(pairs),
        "computed_pairs": float(computed),
        "cached_pairs": float(cached_n),
        "seconds": total_seconds,
        "seconds_per_query": total_seconds / n_q,
        "pairs_per_second": pairs / total_seconds if total_seconds > 0 else 0.0,
        "wall_seconds": time.perf_counter() - wall,
    }
    return run, latency, unparsed


def hybrid_run(first: Mapping[str, Sequence[Candidate]], reranked: Run, alpha: float) -> Run:
    """Fuse a reranked run with the first-stage scores (spec 2.4) through :func:`erank.scoring.hybrid_scores`."""
    out: Run = {}
    for qid, cands in reranked.items():
        fs = {c.docid: c.score for c in first.get(qid, [])}
        rows = [
            {"content": "", "id": c.docid, "first_stage_score": fs[c.docid], "rank_score": c.score}
            for c in cands
        ]
        fused = hybrid_scores(rows, alpha=alpha)
        out[qid] = [Candidate(r["id"], float(r["hybrid_score"])) for r in fused]
    return out
