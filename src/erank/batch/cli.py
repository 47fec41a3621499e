"""``erank batch``: rerank a file of (query, document) pairs on Ray, resumably.

erank batch --input pairs.jsonl --output out/ --model Alibaba-NLP/ERank-4B --workers 4 --gpus-per-worker 1
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from erank.commands import options
from erank.errors import InputError

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "batch",
        help="rerank a large file of query-document pairs on Ray (resumable)",
        description="Score (qid, query, docid, text[, first_stage_score]) pairs with a pool of reranker "
        "actors on Ray and write Parquet shards, a TREC run file and an errors file. Rerun the same "
        "command after a crash or kill to resume: finished shards are skipped.",
        formatter_class=options.HelpFormatter,
    )
    p.add_argument(
        "--input",
        action="append",
        metavar="PAIRS",
        help="required: a JSONL or Parquet file (or folder of them) with qid, query, docid, text and "
        "optional first_stage_score; repeat for several",
    )
    p.add_argument("-i", dest="input", action=_DeprecatedAppend, use="--input")
    p.add_argument(
        "--output", "-o", required=True, metavar="DIR", help="output folder (also the resume state)"
    )
    options.add_model_options(p)
    options.add_instruction(p)
    options.add_truncate_length(p)
    p.add_argument(
        "--batch-tokens",
        type=options.positive_int,
        default=None,
        help="engine batch size in tokens (default: the engine's)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="an existing Ray cluster (ray start --head prints it); default a local Ray",
    )
    p.add_argument(
        "--workers", type=options.positive_int, default=1, help="reranker actors (each loads the model once)"
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs per actor (1 for one worker per GPU; default 0)",
    )
    p.add_argument(
        "--cpus-per-worker",
        type=float,
        default=1.0,
        help="CPUs per actor, also its torch threads (default 1)",
    )
    p.add_argument(
        "--shards",
        type=options.positive_int,
        default=None,
        help="number of qid shards (fixed at the first run); default from input size",
    )
    p.add_argument("--run-tag", default="erank", help="tag in the last column of the TREC run")
    options.add_progress(p)
    p.add_argument("--progress-bars", action="store_true", help="also show Ray Data's own progress bars")
    p.set_defaults(func=run)


class _DeprecatedAppend(options.DeprecatedAlias):
    """``-i PAIRS``: the old short form of ``--input`` (repeatable like it)."""

    def __call__(
        self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None
    ) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        super().__call__(parser, namespace, [*items, values], option_string)


def run(args: argparse.Namespace) -> int:
    from erank.batch.pipeline import BatchConfig, BatchProgress, run_batch
    from erank.progress import progress_bar

    if not args.input:  # not argparse's required=True: the deprecated -i must count too
        raise InputError("--input is required: a JSONL or Parquet file of (qid, query, docid, text) pairs")
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
        method_kwargs=options.method_kwargs_from(args),
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        num_shards=args.shards,
        ray_address=args.ray_address,
        run_tag=args.run_tag,
        show_progress_bars=args.progress_bars,
    )

    with progress_bar(None, "shards", unit="shards", enabled=options.progress_from(args)) as bar:

        def show(p: BatchProgress) -> None:
            bar.update(completed=p.shards_done, total=p.shards_total)
            logger.info(
                "shard %s done on %s (%d/%d shards), %d pairs this run, %.1f pairs/s",
                p.shard, p.node, p.shards_done, p.shards_total, p.pairs, p.pairs_per_second,
            )  # fmt: skip

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
