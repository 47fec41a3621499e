"""``erank eval``: rerank a collection's first-stage candidates and write runs, metrics, a report.

erank eval --data ../shared/data/trec-dl20-passage --first-stage bm25 --top-k 20 --out out/dl20
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from erank.commands import options
from erank.errors import InputError
from erank.types import Scorer

__all__ = ["register", "run_eval"]

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = options.add_command(
        subparsers,
        "eval",
        "evaluate rerankers on a collection (runs, metrics.json, report.md, plots)",
        "Rerank the first-stage candidates of a collection and evaluate (nDCG@10, MAP, MRR@10, "
        "R@k), with hybrid fusion, significance tests against the first stage, a Markdown report and plots. "
        "Scores are cached in OUT/scores.sqlite: a killed run resumes where it stopped.",
    )
    p.add_argument(
        "--data",
        required=True,
        help="collection folder (BEIR, TREC, BRIGHT, FollowIR) or name (beir/scifact)",
    )
    p.add_argument(
        "--first-stage",
        default="bm25",
        help="bm25 | dense | the name of a shipped candidate list (BM25, SPLADE...) | a run or rank_llm JSON "
        "file (default bm25)",
    )
    options.add_top_k(p)
    options.add_queries(p)
    options.add_model_options(p)
    options.add_instruction(p, default="the collection's")
    options.add_truncate_length(p)
    p.add_argument(
        "--alpha",
        type=options.unit_floats,
        default=[0.2],
        help="hybrid weight(s) of the first stage, e.g. 0.2 or 0.1,0.2 (default 0.2)",
    )
    p.add_argument("--no-hybrid", action="store_true", help="no hybrid rows and no alpha sweep")
    p.add_argument(
        "--metrics",
        default="nDCG@10,MAP,MRR@10,R@100",
        help="comma-separated metrics, the first drives the tests (default nDCG@10,MAP,MRR@10,R@100; "
        "recall beyond --top-k is reported as R@k)",
    )
    p.add_argument("--split", default="test", help="qrels split of a BEIR folder (default test)")
    p.add_argument(
        "--no-beir-rule",
        action="store_true",
        help="keep retrieved documents whose id equals the query id (BEIR folders ignore them by default)",
    )
    p.add_argument(
        "--first-stage-only", action="store_true", help="evaluate the first stage alone (no model)"
    )
    p.add_argument(
        "--chunk-size",
        type=options.positive_int,
        default=10,
        help="documents per model call and per cache commit (default 10)",
    )
    p.add_argument("--no-plots", action="store_true", help="no plots in OUT/plots")
    options.add_progress(p)
    options.add_runtime_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from erank.datasets import load_collection
    from erank.evaluation.experiment import Experiment
    from erank.evaluation.metrics import parse_metric
    from erank.evaluation.report import markdown_table

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not metrics:
        raise InputError("--metrics is empty; name at least one (e.g. nDCG@10)")
    for m in metrics:
        parse_metric(m)  # an unknown metric fails here, before the data and the model load
    collection = load_collection(args.data, args.split, beir_rule=False if args.no_beir_rule else None)
    out.mkdir(parents=True, exist_ok=True)
    rerankers: dict[str, Scorer] = {}
    if not args.first_stage_only:
        reranker = options.load_reranker(args)
        name = Path(str(reranker.model_name)).name
        mode = reranker.mode
        rerankers[f"{name}-{args.method}{'-' + mode if mode else ''}"] = reranker
    exp = Experiment(
        collection,
        rerankers,
        first_stage=args.first_stage,
        top_k=args.top_k,
        metrics=metrics,
        alphas=() if args.no_hybrid else args.alpha,
        sweep=() if args.no_hybrid or not rerankers else None,
        queries=args.queries,
        instruction=args.instruction,
        truncate_length=args.truncate_length,
        cache=out / "scores.sqlite",
        chunk_size=args.chunk_size,
        progress=not args.no_progress,
    )
    result = exp.run()
    result.write(out, plots=not args.no_plots)
    sys.stdout.write(markdown_table(result) + "\n")
    sys.stdout.write(f"\nwritten: {out / 'report.md'}, {out / 'metrics.json'}, {out / 'runs'}\n")
    return 0
