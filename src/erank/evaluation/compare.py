"""The comparison table: every method on the same first-stage candidates, one model, one command.

Reads rank_llm candidate JSON (``retrieve_results_*.json``) and TREC qrels, reranks the top
``top_k`` candidates of each judged query with each method, and reports nDCG@10 (ir_measures),
model calls, prompt and generated tokens, and wall time per query, beside the first stage's
nDCG@10 on exactly the same queries.

>>> from erank.evaluation.compare import run_comparison, format_table                 # doctest: +SKIP
>>> rows = run_comparison("../shared/data/trec-dl20-passage/BM25/retrieve_results_dl20_top100.json",
...                       ["erank", "yesno"], queries=5, out_dir="out")           # doctest: +SKIP
>>> print(format_table(rows))                                                    # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from erank.datasets import read_qrels, read_rankllm_candidates, write_run
from erank.datasets.types import Candidate
from erank.engines import Engine, create_engine
from erank.errors import InputError
from erank.evaluation.metrics import ndcg_at_10
from erank.methods import METHODS, check_method_kwargs, create_method
from erank.progress import progress_bar, progress_status

__all__ = ["load_candidates", "find_qrels", "load_qrels", "ndcg_at_10", "run_comparison", "format_table"]

logger = logging.getLogger(__name__)


def load_candidates(path: str | Path) -> list[dict[str, Any]]:
    """``[{"qid": str, "query": str, "hits": [{"docid": str, "content": str, "score": float}]}]``
    from a rank_llm candidate file (read by :func:`erank.datasets.read_rankllm_candidates`)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"candidate file {p} does not exist (pass a rank_llm retrieve_results_*.json)")
    queries, run = read_rankllm_candidates(p)
    return [
        {
            "qid": qid,
            "query": queries[qid],
            "hits": [{"docid": c.docid, "content": c.text or "", "score": c.score} for c in cands],
        }
        for qid, cands in run.items()
    ]


def find_qrels(candidates: str | Path) -> Path:
    """The qrels file beside the candidates or in a parent folder (``qrels*.txt``)."""
    p = Path(candidates).resolve()
    for folder in [p.parent, *p.parents][:3]:
        found = sorted(folder.glob("qrels*.txt"))
        if found:
            return found[0]
    raise InputError(f"no qrels*.txt found near {candidates}; pass --qrels")


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC qrels ``qid 0 docid grade`` as ``{qid: {docid: grade}}`` (:func:`erank.datasets.formats.read_qrels`)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"qrels file {p} does not exist")
    return read_qrels(p)


def _rank_run(docids: Sequence[str], order: Sequence[int]) -> dict[str, float]:
    # Scores from ranks, so trec_eval's re-sort (ties by docid) keeps the method's exact order.
    n = len(order)
    return {docids[i]: float(n - r) for r, i in enumerate(order)}


def run_comparison(
    data: str | Path,
    methods: Sequence[str],
    *,
    model: str | None = None,
    engine: str | Engine = "transformers",
    qrels: str | Path | None = None,
    top_k: int = 20,
    queries: int | None = None,
    queries_for: Mapping[str, int] | None = None,
    method_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    instruction: str | None = "trec-dl",
    truncate_length: int | None = 2048,
    out_dir: str | Path | None = None,
    progress: bool = True,
    device: str | None = None,
) -> list[dict[str, Any]]:
    """Rerank the top ``top_k`` candidates of the judged queries with each method; one row per method.

    ``queries`` takes the first N judged queries by id (as ``erank eval`` does:
    :func:`erank.evaluation.experiment.first_queries`); ``queries_for`` overrides it per method
    (for slow methods). ``method_kwargs`` maps a method name to its constructor arguments.
    Writes ``<method>.run`` (TREC run), ``rows.json`` and ``table.md`` under ``out_dir``.
    ``progress``: a progress bar per method on a terminal (:mod:`erank.progress`); ``device``:
    the engine's device (default: CUDA when available).
    """
    from erank.evaluation.experiment import first_queries

    unknown = [m for m in methods if m.split("@")[0] not in METHODS]
    if unknown:
        raise InputError(f"unknown methods {unknown}; available: {', '.join(sorted(METHODS))}")
    if top_k <= 0:
        raise InputError(f"top_k must be positive, got {top_k}")
    all_cands = load_candidates(data)
    qrels_path = Path(qrels) if qrels else find_qrels(data)
    judged = load_qrels(qrels_path)
    cands = [c for c in all_cands if c["qid"] in judged]
    if not cands:
        raise InputError(f"no query of {data} is judged in {qrels_path}")
    for label in methods:  # every method's arguments by name, before the model loads
        check_method_kwargs(label.split("@")[0], dict((method_kwargs or {}).get(label, {})))
    by_qid = {c["qid"]: c for c in cands}
    if isinstance(engine, Engine):
        eng = engine
    else:
        status = f"loading {model or 'erank-smol'}"
        with progress_status(status, enabled=None if progress else False):
            eng = create_engine(engine, model, **({"device": device} if device else {}))
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for label in methods:
        name = label.split("@")[0]
        kwargs = dict((method_kwargs or {}).get(label, {}))
        method = create_method(name, eng, **kwargs)
        n_q = (queries_for or {}).get(label, queries)
        subset = [by_qid[q] for q in first_queries(list(by_qid), n_q or None)]
        run: dict[str, dict[str, float]] = {}
        first_stage: dict[str, dict[str, float]] = {}
        totals = {"model_calls": 0, "prompt_tokens": 0, "generated_tokens": 0, "unparsed": 0, "seconds": 0.0}
        counters: dict[str, int] = {}
        start = time.perf_counter()
        with progress_bar(len(subset), label, unit="queries", enabled=None if progress else False) as bar:
            for c in subset:
                hits = c["hits"][:top_k]
                docids = [h["docid"] for h in hits]
                res = method.rerank(
                    c["query"], [h["content"] for h in hits], instruction, truncate_length=truncate_length
                )
                run[c["qid"]] = _rank_run(docids, res.ranking)
                first_stage[c["qid"]] = _rank_run(docids, list(range(len(hits))))
                for key in ("model_calls", "prompt_tokens", "generated_tokens", "unparsed"):
                    totals[key] += getattr(res.usage, key)
                totals["seconds"] += res.usage.seconds
                for key, value in method.last_counters.items():
                    counters[key] = counters.get(key, 0) + int(value)
                bar.advance()
        wall = time.perf_counter() - start
        nq = len(subset)
        row: dict[str, Any] = {
            "method": label,
            "mode": method.mode,
            "queries": nq,
            "ndcg@10": ndcg_at_10(judged, run),
            "first_stage_ndcg@10": ndcg_at_10(judged, first_stage),
            "calls_per_query": totals["model_calls"] / nq,
            "prompt_tokens_per_query": totals["prompt_tokens"] / nq,
            "generated_tokens_per_query": totals["generated_tokens"] / nq,
            "seconds_per_query": totals["seconds"] / nq,
            "unparsed": int(totals["unparsed"]),
            "counters": counters,
            "kwargs": kwargs,
            "wall_seconds": wall,
        }
        rows.append(row)
        logger.info(
            "%s: nDCG@10 %.4f over %d queries, %.1f s/query",
            label,
            row["ndcg@10"],
            nq,
            row["seconds_per_query"],
        )
        if out:
            ranked = {
                qid: [Candidate(d, s) for d, s in sorted(docs.items(), key=lambda kv: -kv[1])]
                for qid, docs in run.items()
            }
            write_run(ranked, out / f"{label}.run", tag=f"erank-{label}")
            (out / "rows.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
            (out / "table.md").write_text(format_table(rows, model=eng.model_name), encoding="utf-8")
    return rows


def format_table(rows: Sequence[Mapping[str, Any]], model: str = "") -> str:
    """A markdown table of :func:`run_comparison` rows."""
    head = (
        "| method | mode | queries | nDCG@10 | first stage nDCG@10 (same queries) | calls/query "
        "| prompt tokens/query | generated tokens/query | s/query | unparsed | notes |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        notes = ", ".join(f"{k} {v}" for k, v in sorted(r.get("counters", {}).items()))
        lines.append(
            f"| {r['method']} | {r['mode'] or '-'} | {r['queries']} | {r['ndcg@10']:.4f} | {r['first_stage_ndcg@10']:.4f} "
            f"| {r['calls_per_query']:.1f} | {r['prompt_tokens_per_query']:.0f} | {r['generated_tokens_per_query']:.0f} "
            f"| {r['seconds_per_query']:.2f} | {r['unparsed']} | {notes} |"
        )
    title = f"Model: {model}\n\n" if model else ""
    return title + head + "\n".join(lines) + "\n"
