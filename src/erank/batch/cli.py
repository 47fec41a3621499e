"""``erank batch``: rerank a file of (query, document) pairs on Ray, resumably.

erank batch --input pairs.jsonl --output out/ --model Alibaba-NLP/ERank-4B --workers 4 --gpus-per-worker 1
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from erank.errors import InputError

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "batch",
        help="rerank a large file of query-document pairs on Ray (resumable)",
        description="Score (qid, query, docid, text[, first_stage_score]) pairs with a pool of reranker "
        "actors on Ray and write Parquet shards, a TREC run file and an errors file. Rerun the same "
        "command after a crash or kill to resume: finished shards are skipped.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--input",
        "-i",
        required=True,
        action="append",
        metavar="PAIRS",
        help="JSONL or Parquet file (or folder of them) with qid, query, docid, text and optional "
        "first_stage_score; repeat for several",
    )
    p.add_argument(
        "--output", "-o", required=True, metavar="DIR", help="output folder (also the resume state)"
    )
    p.add_argument(
        "--model", "-m", default=None, help="hub id, model folder or .gguf; default the embedded SmolLM2-135M"
    )
    p.add_argument("--engine", default="transformers", help="engine in each worker (transformers, vllm, ...)")
    p.add_argument("--method", default="erank", help="ranking method")
    p.add_argument(
        "--mode",
        choices=["direct", "reasoning"],
        default=None,
        help="ERank mode; default direct for the embedded model, reasoning otherwise",
    )
    p.add_argument("--instruction", default=None, help="task instruction name or text; default beir")
    p.add_argument("--truncate-length", type=int, default=2048, help="cut query and documents to N tokens")
    p.add_argument("--batch-tokens", type=int, default=None, help="engine batch size in tokens")
    p.add_argument("--max-new-tokens", type=int, default=None, help="reasoning budget (reasoning mode)")
    p.add_argument(
        "--ray-address",
        default=None,
        help="an existing Ray cluster (ray start --head prints it); default a local Ray",
    )
    p.add_argument("--workers", type=int, default=1, help="reranker actors (each loads the model once)")
    p.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="GPUs per actor (1 for one worker per GPU)"
    )
    p.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="CPUs per actor (also its torch threads)"
    )
    p.add_argument(
        "--shards",
        type=int,
        default=None,
        help="number of qid shards (fixed at the first run); default from input size",
    )
    p.add_argument("--run-tag", default="erank", help="tag in the last column of the TREC run")
    p.add_argument("--progress-bars", action="store_true", help="also show Ray Data's progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from erank.batch.pipeline import BatchConfig, BatchProgress, run_batch

    method_kwargs: dict[str, Any] = {}
    if args.max_new_tokens is not None:
        if args.max_new_tokens <= 0:
            raise InputError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
        method_kwargs["max_new_tokens"] = args.max_new_tokens
    cfg = BatchConfig(
        inputs=args.input,
        output=args.output,
        model=args.model,
        engine=args.engine,
        method=args.method,
        mode=args.mode,
        instruction=args.instruction,
        truncate_length=args.truncate_length,
        batch_tokens=args.batch_tokens,
        method_kwargs=method_kwargs,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        num_shards=args.shards,
        ray_address=args.ray_address,
        run_tag=args.run_tag,
        show_progress_bars=args.progress_bars,
    )

    def show(p: BatchProgress) -> None:
        sys.stderr.write(
            f"erank batch: shard {p.shard} done on {p.node} ({p.shards_done}/{p.shards_total} shards), "
            f"{p.pairs} pairs this run, {p.pairs_per_second:.1f} pairs/s\n"
        )
        sys.stderr.flush()

    summary = run_batch(cfg, progress=show)
    sys.stderr.write(
        f"erank batch: {summary.pairs} pairs of {summary.queries} queries scored, {summary.errors} rows in "
        f"{summary.errors_file}; run file {summary.run_file} ({summary.shards_skipped} shards were already done)\n"
    )
    sys.stdout.write(
        json.dumps(
            {
                "pairs": summary.pairs,
                "queries": summary.queries,
                "errors": summary.errors,
                "output": summary.output,
            }
        )
        + "\n"
    )
    return 0
