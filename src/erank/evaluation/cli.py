"""``erank eval``: rerank a collection's first-stage candidates and write runs, metrics, a report.

erank eval --data ../shared/data/trec-dl20-passage --first-stage bm25 --top-k 20 --out out/dl20
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from erank.errors import InputError

__all__ = ["register", "run_eval"]

logger = logging.getLogger(__name__)


def _alphas(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"alpha must be a number or a comma-separated list, got {text!r}"
        ) from exc
    for v in values:
        if not 0.0 <= v <= 1.0:
            raise argparse.ArgumentTypeError(f"alpha must be between 0 and 1, got {v}")
    return values


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate rerankers on a collection (runs, metrics.json, report.md, plots)",
        description="Rerank the first-stage candidates of a collection and evaluate (nDCG@10, MAP, MRR@10, R@100), "
        "with hybrid fusion, significance tests against the first stage, a Markdown report and plots. "
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
        help="bm25 | dense | the name of a shipped candidate list (BM25, SPLADE...) | a run or rank_llm JSON file",
    )
    p.add_argument("--top-k", type=_positive, default=100, help="candidates reranked per query (default 100)")
    p.add_argument(
        "--model", default=None, help="model (hub id, folder, .gguf); default: the embedded SmolLM2-135M"
    )
    p.add_argument("--method", default="erank", help="ranking method (default erank)")
    p.add_argument("--mode", choices=["direct", "reasoning"], default=None, help="ERank mode")
    p.add_argument("--engine", default="transformers", help="engine (default transformers)")
    p.add_argument(
        "--alpha",
        type=_alphas,
        default=[0.2],
        help="hybrid weight(s) of the first stage, e.g. 0.2 or 0.1,0.2",
    )
    p.add_argument("--no-hybrid", action="store_true", help="no hybrid rows and no alpha sweep")
    p.add_argument("--queries", type=_positive, default=None, help="only the first N judged queries")
    p.add_argument(
        "--metrics", default="nDCG@10,MAP,MRR@10,R@100", help="comma-separated metrics (first drives tests)"
    )
    p.add_argument("--instruction", default=None, help="instruction name or text (default: the collection's)")
    p.add_argument(
        "--truncate-length", type=_positive, default=2048, help="tokens kept of query and document"
    )
    p.add_argument("--split", default="test", help="qrels split of a BEIR folder")
    p.add_argument(
        "--no-beir-rule",
        action="store_true",
        help="keep retrieved documents whose id equals the query id (BEIR folders ignore them by default)",
    )
    p.add_argument(
        "--first-stage-only", action="store_true", help="evaluate the first stage alone (no model)"
    )
    p.add_argument(
        "--chunk-size", type=_positive, default=10, help="documents per model call (and per cache commit)"
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from erank.datasets import load_collection
    from erank.evaluation.experiment import Experiment
    from erank.evaluation.report import markdown_table

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    collection = load_collection(args.data, args.split, beir_rule=False if args.no_beir_rule else None)
    rerankers: dict[str, Any] = {}
    if not args.first_stage_only:
        from erank.reranker import Reranker

        reranker = Reranker(args.model, method=args.method, engine=args.engine, mode=args.mode)
        name = Path(str(reranker.model_name)).name
        mode = reranker.mode
        rerankers[f"{name}-{args.method}{'-' + mode if mode else ''}"] = reranker
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
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
