"""Pairs per second of ``erank batch`` with 1 and 2 Ray workers, in one run.

Builds a pairs file from TREC DL20 (BM25 top candidates, passages cut to ``--chars``), then runs
the whole job (local Ray start, read, shuffle, actor start-up with model load, scoring, writing)
once per worker count, each into a fresh output folder, and prints a Markdown table with two
rates: end to end (what a user waits for, Ray start-up and model loads included) and scoring only
(pairs / (sum of the actors' per-shard seconds / workers): the rate of the loaded actors).

    flock /tmp/erank-heavy.lock .venv/bin/python benchmarks/batch_ray.py --queries 6 --per-query 8 --chars 300
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def build_pairs(data: Path, out: Path, queries: int, per_query: int, chars: int) -> int:
    entries = json.loads(
        (data / "trec-dl20-passage/BM25/retrieve_results_dl20_top100.json").read_text("utf-8")
    )
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for e in entries[:queries]:
            for h in e["hits"][:per_query]:
                row = {
                    "qid": h["qid"],
                    "query": e["query"],
                    "docid": h["docid"],
                    "text": h["content"][:chars],
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--per-query", type=int, default=10)
    ap.add_argument("--chars", type=int, default=400, help="passage prefix length in characters")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--engine", default="transformers")
    ap.add_argument("--mode", default="direct", choices=["direct", "reasoning"])
    ap.add_argument("--gpus-per-worker", type=float, default=0.0)
    ap.add_argument("--ray-address", default=None, help="an existing cluster; default a local Ray per job")
    args = ap.parse_args()

    from erank.batch import BatchConfig, run_batch

    tmp = Path(tempfile.mkdtemp(prefix="erank-batch-bench-"))
    try:
        pairs = tmp / "pairs.jsonl"
        n = build_pairs(Path(args.data), pairs, args.queries, args.per_query, args.chars)
        results = []
        for w in args.workers:
            cpus = max(1, (os.cpu_count() or 1) // w)
            t0 = time.perf_counter()
            s = run_batch(
                BatchConfig(
                    inputs=[pairs],
                    output=tmp / f"out-{w}",
                    model=args.model,
                    mode=args.mode,
                    engine=args.engine,
                    workers=w,
                    cpus_per_worker=cpus,
                    gpus_per_worker=args.gpus_per_worker,
                    ray_address=args.ray_address,
                    num_shards=args.shards,
                )
            )
            wall = time.perf_counter() - t0
            shard_secs = [
                json.loads(p.read_text())["seconds"] for p in (tmp / f"out-{w}" / "_done").glob("*.json")
            ]
            busy = sum(shard_secs)
            results.append((w, cpus, s.pairs, wall, s.pairs / wall, s.pairs / (busy / w) if busy else 0.0))
            print(f"workers={w}: {s.pairs} pairs in {wall:.1f} s", file=sys.stderr)
        base = results[0][4]
        print(
            f"\n{n} pairs ({args.queries} DL20 queries x {args.per_query} BM25 passages, {args.chars} chars), "
            f"model {args.model or 'SmolLM2-135M (embedded)'}, {args.mode} mode, engine {args.engine}\n"
        )
        print(
            "| workers | torch threads / worker | pairs | wall s (with Ray start) | pairs/s end to end | ratio | pairs/s scoring only |"
        )
        print("|---|---|---|---|---|---|---|")
        for w, cpus, p, wall, pps, score_pps in results:
            print(f"| {w} | {cpus} | {p} | {wall:.1f} | {pps:.2f} | {pps / base:.2f}x | {score_pps:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
