"""Fine-grained 0..10 targets from graded judgements blended with a teacher scorer.

``erank train data`` with ``labels: blend`` builds, for every *judged* (query, document) pair of
the training sources, a real-valued target in 0..10:

* the judgement fixes the band: grade ``g`` of a collection whose top grade is ``G`` maps to
  ``[10 g / (G + 1), 10 (g + 1) / (G + 1)]`` (TREC DL's 0-3 grades: 0-2.5, 2.5-5, 5-7.5, 7.5-10);
* the teacher places the document inside its band: its percentile among the query's judged
  documents by the teacher's score (default teacher: the bundled all-MiniLM-L6-v2 bi-encoder,
  cosine similarity; it reranks TREC DL far better than BM25, but worse than the judgements).

So the human judgement always decides the coarse order and the teacher adds the fine order the
grades leave tied. The candidate pool of a query is the union of every first-stage run given for
the source (``pools``), so the judged documents are varied: BM25's hard negatives and the dense
runs' near misses. The integer label of a pair is its target rounded; the trainer
(:mod:`erank.training.pointwise`) uses the real value (a two-point distribution on its two nearest
integers, whose expectation is the target).

>>> band_target(3, 3, 1.0), band_target(0, 3, 0.0), band_target(1, 1, 0.5)
(10.0, 0.0, 7.5)
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from erank.errors import DataFormatError, InputError
from erank.progress import progress_bar
from erank.training.config import DataConfig, SourceConfig

__all__ = ["band_target", "percentiles", "build_blend_dataset", "TeacherScorer"]

logger = logging.getLogger(__name__)


def band_target(grade: int, max_grade: int, percentile: float) -> float:
    """The target of a document of ``grade`` at ``percentile`` (0..1) of its query's teacher scores."""
    g = min(max(int(grade), 0), max_grade)
    width = 10.0 / (max_grade + 1)
    return round(width * g + width * min(max(percentile, 0.0), 1.0), 4)


def percentiles(scores: list[float]) -> list[float]:
    """Each score's rank percentile among ``scores``: 0 for the lowest, 1 for the highest (ties share).

    >>> percentiles([0.1, 0.5, 0.3])
    [0.0, 1.0, 0.5]
    """
    n = len(scores)
    if n <= 1:
        return [0.5] * n
    order = sorted(scores)
    first: dict[float, int] = {}
    last: dict[float, int] = {}
    for i, s in enumerate(order):
        first.setdefault(s, i)
        last[s] = i
    return [(first[s] + last[s]) / 2 / (n - 1) for s in scores]


class TeacherScorer:
    """A sentence-transformers bi-encoder as the teacher: cosine(query, document)."""

    def __init__(self, model: str | None = None, batch_size: int = 64) -> None:
        from erank.errors import require

        st: Any = require("sentence_transformers", "eval", "the teacher of labels: blend")
        from erank.retrieval.dense import default_dense_model_path

        path = model or str(default_dense_model_path())
        self.name = Path(path).name
        self.model = st.SentenceTransformer(path, device="cpu", local_files_only=True)
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> Any:
        from erank.retrieval.dense import encode_texts

        return encode_texts(self.model, texts, self.batch_size)

    def score(self, query: str, docs: list[str]) -> list[float]:
        q = self.encode([query])[0]
        d = self.encode(docs)
        return [float(x) for x in d @ q]


def _pool_candidates(src: SourceConfig) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Document texts and per-query docids from the extra candidate runs (rank_llm JSON)."""
    docs: dict[str, str] = {}
    pools: dict[str, list[str]] = {}
    for rel in src.pools:
        p = src.path / rel
        if not p.is_file():
            raise DataFormatError(f"source {src.name!r}: pool file {p} is missing")
        for e in json.loads(p.read_text(encoding="utf-8")):
            for h in e.get("hits") or []:
                qid, did = str(h["qid"]), str(h["docid"])
                docs[did] = str(h["content"])
                pools.setdefault(qid, []).append(did)
    return docs, pools


def build_blend_dataset(cfg: DataConfig) -> dict[str, Any]:
    """Write ``train.jsonl``, ``eval.jsonl`` and ``params.json`` with blended targets (module doc)."""
    from erank.training.data import _write_jsonl, eval_row, load_source

    t0 = time.time()
    rng = random.Random(cfg.seed)
    teacher = TeacherScorer(cfg.blend_teacher)
    rows: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    stats: dict[str, Any] = {"queries": 0, "pairs": 0, "skipped_no_positive": 0, "unjudged_left_out": 0}
    for src in cfg.sources:
        coll = load_source(src)
        extra_docs, pools = _pool_candidates(src)
        for did, text in extra_docs.items():
            coll.docs.setdefault(did, text)
        qids = list(coll.queries)
        if src.name in cfg.eval_sources:
            evals.extend(eval_row(src.name, coll, qid, cfg.eval_candidates) for qid in qids)
            continue
        with progress_bar(len(qids), f"labelling {src.name}", unit="queries") as bar:
            for qid in qids:
                bar.advance()
                if bar.completed % 10 == 0 or bar.completed == len(qids):
                    logger.info("labelling %s: %s", src.name, bar.status_text())
                judged = dict(coll.qrels.get(qid, {}))
                pool = [d for d, _ in coll.candidates.get(qid, [])] + pools.get(qid, [])
                docids = list(dict.fromkeys(pool))  # first-seen order, no duplicates
                if src.drop_judged_zero:  # left out entirely, never turned into unjudged negatives
                    docids = [d for d in docids if judged.get(d, 1) > 0]
                    judged = {d: g for d, g in judged.items() if g > 0}
                if src.unjudged_depth:
                    docids = docids[: src.unjudged_depth]
                    judged.update({d: 0 for d in docids if d not in judged})
                stats["unjudged_left_out"] += sum(1 for d in docids if d not in judged)
                docids = [d for d in docids if d in judged and d in coll.docs and coll.docs[d].strip()]
                if not any(judged[d] >= cfg.positive_min_grade for d in docids):
                    # A query without a positive would teach only "0" and break the RL groups' reward.
                    stats["skipped_no_positive"] += 1
                    continue
                if cfg.max_docs_per_query and len(docids) > cfg.max_docs_per_query:
                    docids = rng.sample(docids, cfg.max_docs_per_query)
                t_scores = teacher.score(coll.queries[qid], [coll.docs[d] for d in docids])
                pct = percentiles(t_scores)
                stats["queries"] += 1
                for d, ts, pc in zip(docids, t_scores, pct, strict=True):
                    target = band_target(judged[d], coll.max_grade, pc)
                    rows.append(
                        {
                            "qid": f"{src.name}/{qid}",
                            "docid": d,
                            "source": src.name,
                            "query": coll.queries[qid],
                            "doc": coll.docs[d],
                            "instruction": coll.instruction,
                            "completion": str(round(target)),
                            "target": target,
                            "label": round(target),
                            "grade": judged[d],
                            "max_grade": coll.max_grade,
                            "is_positive": judged[d] >= cfg.positive_min_grade,
                            "teacher_score": round(ts, 5),
                            "style": "direct",
                        }
                    )
        logger.info("%s: %d queries so far, %d pairs", src.name, stats["queries"], len(rows))
    if not rows:
        raise InputError("no training pairs were built: check that the sources have judged positives")
    stats["pairs"] = len(rows)
    stats["eval_queries"] = len(evals)
    stats["label_distribution"] = {str(k): v for k, v in sorted(Counter(r["label"] for r in rows).items())}
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "train.jsonl", rows)
    _write_jsonl(out / "eval.jsonl", evals)
    params = {
        "config": json.loads(cfg.model_dump_json()),
        "counts": stats,
        "teacher": teacher.name,
        "labels": "blend: judgement band + teacher percentile (erank.training.blend)",
        "seconds": round(time.time() - t0, 1),
    }
    (out / "params.json").write_text(json.dumps(params, indent=2, default=str), encoding="utf-8")
    return stats
