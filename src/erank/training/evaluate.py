"""A small validation nDCG@10 on the held-out split (``eval.jsonl`` of ``erank train data``).

Each held-out query's first-stage candidates (top ``candidates``) are reranked by a reranker
(:func:`evaluate_reranker`; ERank on the engine of the model being trained:
:func:`evaluate_engine`), and nDCG@10 (trec_eval's ``ndcg_cut.10``, via ``ir_measures``) is computed
against the query's judgements, next to the first stage's own nDCG@10 on the same candidates.

>>> from erank.training.evaluate import evaluate_model      # doctest: +SKIP
>>> evaluate_model("runs/toy-sft/merged", "runs/toy-data/eval.jsonl")["ndcg@10"]  # doctest: +SKIP
0.41
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from erank.errors import InputError
from erank.evaluation.metrics import ndcg_at_10
from erank.progress import progress_bar
from erank.training.data import read_jsonl
from erank.types import Scorer

__all__ = ["ndcg_at_10", "evaluate_engine", "evaluate_model", "evaluate_reranker"]

logger = logging.getLogger(__name__)


def _rows(eval_rows: list[dict[str, Any]] | str | Path, max_queries: int | None) -> list[dict[str, Any]]:
    rows = read_jsonl(eval_rows) if isinstance(eval_rows, (str, Path)) else list(eval_rows)
    rows = [r for r in rows if any(g > 0 for g in r.get("qrels", {}).values())]
    if not rows:
        raise InputError("the eval split has no query with a relevant document")
    return rows[:max_queries] if max_queries else rows


def evaluate_engine(
    engine: Any,
    eval_rows: list[dict[str, Any]] | str | Path,
    *,
    max_queries: int | None = None,
    candidates: int = 10,
    truncate_length: int | None = 2048,
    mode: str = "direct",
    alpha: float = 0.2,
    template: str | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_reranker` with ERank (rule ``s x P(s)``) on ``engine``: the model being
    trained, in eval mode for the duration (and back in train mode after, if it was)."""
    from erank.reranker import Reranker

    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be between 0 and 1, got {alpha}")
    # rule s x P(s) for ``ndcg@10`` whatever the model's presets; the expected score is reported beside it
    reranker = Reranker(engine=engine, mode=mode, template=template, rule="label_prob")
    model = getattr(engine, "model", None)
    was_training = bool(getattr(model, "training", False))
    if model is not None:
        model.eval()
    try:
        return evaluate_reranker(
            reranker,
            eval_rows,
            max_queries=max_queries,
            candidates=candidates,
            truncate_length=truncate_length,
            alpha=alpha,
        )
    finally:
        if model is not None and was_training:
            model.train()


def evaluate_reranker(
    reranker: Scorer,
    eval_rows: list[dict[str, Any]] | str | Path,
    *,
    max_queries: int | None = None,
    candidates: int = 10,
    truncate_length: int | None = 2048,
    alpha: float = 0.2,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Rerank the eval split with ``reranker``; nDCG@10 of the reranking and of the first stage.

    Also ``hybrid_ndcg@10`` (spec 2.4: ``alpha`` x z(first-stage score) + (1 - alpha) x
    z(rank_score) per query; documents without a first-stage ``score`` use their reversed rank) and
    ``label0_share``, the share of documents whose parsed label is 0 (rank_score exactly 0, so a
    model that answers 0 to everything keeps the input order). Where the scores carry their
    distributions (ERank ``direct``) also ``expected_ndcg@10``: the ranking by the expected score
    sum_s s x P(s) of the same distributions, a diagnostic (not ERank's rule) that shows whether a
    model whose most probable label is 0 everywhere still orders documents by its probabilities.

    Progress: a bar with an ETA on a terminal (``progress=None``: :func:`erank.progress.progress_bar`
    decides; ``False``: none) and, every 10 queries, an INFO log line with the same figures.
    """
    from erank.scoring import hybrid_scores

    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be between 0 and 1, got {alpha}")
    rows = _rows(eval_rows, max_queries)
    t0 = time.time()
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    first: dict[str, dict[str, float]] = {}
    hybrid: dict[str, dict[str, float]] = {}
    expected: dict[str, dict[str, float]] = {}
    hybrid_expected: dict[str, dict[str, float]] = {}
    pairs = label0 = 0
    labels: Counter[int] = Counter()
    bar = progress_bar(len(rows), "evaluating", unit="queries", enabled=progress)
    with bar:
        for r in rows:
            cands = r["candidates"][:candidates]
            if not cands:
                bar.advance()
                continue
            res = reranker.score(
                r["query"], [c["content"] for c in cands], r["instruction"], truncate_length=truncate_length
            )
            qid = str(r["qid"])
            qrels[qid] = {str(d): int(g) for d, g in r["qrels"].items()}
            n = len(cands)
            run[qid] = {str(cands[i]["docid"]): float(n - pos) for pos, i in enumerate(res.ranking)}
            first[qid] = {str(c["docid"]): float(n - i) for i, c in enumerate(cands)}
            fused = hybrid_scores(
                [
                    {"first_stage_score": float(c.get("score", n - i)), "rank_score": sc.score}
                    for i, (c, sc) in enumerate(zip(cands, res.scores, strict=True))
                ],
                alpha,
                sort=False,
            )
            hybrid[qid] = {str(c["docid"]): f["hybrid_score"] for c, f in zip(cands, fused, strict=True)}
            label0 += sum(1 for sc in res.scores if sc.label == 0)
            labels.update(-1 if sc.label is None else sc.label for sc in res.scores)
            if all(sc.expected_score is not None for sc in res.scores):
                expected[qid] = {
                    str(c["docid"]): float(sc.expected_score or 0.0)
                    for c, sc in zip(cands, res.scores, strict=True)
                }
                fused_e = hybrid_scores(
                    [
                        {"first_stage_score": float(c.get("score", n - i)), "rank_score": sc.expected_score}
                        for i, (c, sc) in enumerate(zip(cands, res.scores, strict=True))
                    ],
                    alpha,
                    sort=False,
                )
                hybrid_expected[qid] = {
                    str(c["docid"]): f["hybrid_score"] for c, f in zip(cands, fused_e, strict=True)
                }
            pairs += n
            bar.advance()
            if bar.completed % 10 == 0 or bar.completed == len(rows):
                logger.info("evaluating: %s", bar.status_text())
    extra = (
        {
            "expected_ndcg@10": ndcg_at_10(qrels, expected),
            "expected_hybrid_ndcg@10": ndcg_at_10(qrels, hybrid_expected),
        }
        if len(expected) == len(run) and run
        else {}
    )
    return {
        **extra,
        "ndcg@10": ndcg_at_10(qrels, run),
        "first_stage_ndcg@10": ndcg_at_10(qrels, first),
        "hybrid_ndcg@10": ndcg_at_10(qrels, hybrid),
        "alpha": alpha,
        "label0_share": label0 / pairs if pairs else 0.0,
        "label_distribution": {str(k): v for k, v in sorted(labels.items())},
        "queries": float(len(run)),
        "pairs": float(pairs),
        "seconds": round(time.time() - t0, 1),
    }


def evaluate_model(
    model: str | Path | None,
    eval_rows: list[dict[str, Any]] | str | Path,
    *,
    max_queries: int | None = None,
    candidates: int = 10,
    truncate_length: int | None = 2048,
    mode: str = "direct",
    device: str | None = None,
    alpha: float = 0.2,
    engine: str = "transformers",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Load ``model`` (folder, GGUF, adapter folder, ``None`` = default) on ``engine`` as an ERank
    :class:`~erank.Reranker` ranking by ``s x P(s)`` and run :func:`evaluate_reranker`."""
    from erank.reranker import Reranker

    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be between 0 and 1, got {alpha}")
    rr = Reranker(
        None if model is None else str(model), engine=engine, mode=mode, device=device, rule="label_prob"
    )
    try:
        return evaluate_reranker(
            rr,
            eval_rows,
            max_queries=max_queries,
            candidates=candidates,
            truncate_length=truncate_length,
            alpha=alpha,
            progress=progress,
        )
    finally:
        rr.close()
