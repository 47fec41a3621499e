"""bm25s BM25 (and optionally dense) on the shared collections: nDCG@10, MAP, MRR@10, R@100.

Also checks the shipped TREC DL candidate lists through the same harness, and reports the speed-up of
a cached BM25 index over building it (a ratio taken in one run).

    flock /tmp/erank-heavy.lock .venv/bin/python benchmarks/eval_first_stage.py
    flock /tmp/erank-heavy.lock .venv/bin/python benchmarks/eval_first_stage.py --dense   # adds MiniLM
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ERANK_SHARED_DATA", REPO.parent / "shared" / "data"))
METRICS = ["nDCG@10", "MAP", "MRR@10", "R@100"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--collections", default="vaswani,cranfield,cacm,med,adi")
    ap.add_argument("--dense", action="store_true", help="also all-MiniLM-L6-v2 dense retrieval")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["ERANK_CACHE"] = tempfile.mkdtemp(prefix="erank-bench-")  # cold caches: build times are real
    from erank.datasets import load_candidates, load_collection
    from erank.evaluation import evaluate_run
    from erank.retrieval import BM25Retriever, DenseRetriever

    print(
        "| collection | first stage | queries | " + " | ".join(METRICS) + " | index build s | cached load s |"
    )
    print("|---|---|---|" + "---|" * (len(METRICS) + 2))
    for name in args.collections.split(","):
        coll = load_collection(DATA / name, beir_rule=False)
        t0 = time.perf_counter()
        BM25Retriever(coll.corpus)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        bm25 = BM25Retriever(coll.corpus)
        cached = time.perf_counter() - t0
        assert bm25.loaded_from_cache
        run = bm25.retrieve(coll.queries, k=100)
        ev = evaluate_run(run, coll.qrels, METRICS, relevance_level=coll.relevance_level)
        cells = " | ".join(f"{ev['aggregate'][m]:.4f}" for m in METRICS)
        print(f"| {name} | bm25s BM25 | {ev['queries']} | {cells} | {build:.2f} | {cached:.2f} |")
        if args.dense:
            t0 = time.perf_counter()
            dense = DenseRetriever(coll.corpus)
            build = time.perf_counter() - t0
            ev = evaluate_run(dense.retrieve(coll.queries, k=100), coll.qrels, METRICS)
            cells = " | ".join(f"{ev['aggregate'][m]:.4f}" for m in METRICS)
            print(f"| {name} | MiniLM-L6 dense | {ev['queries']} | {cells} | {build:.2f} | – |")
    for name in ("trec-dl20-passage", "trec-dl21-passage"):
        coll = load_collection(DATA / name)
        for fs in sorted(coll.candidate_files):
            if fs == "REP_LLAMA":
                continue
            ev = evaluate_run(
                load_candidates(coll, fs), coll.qrels, METRICS, relevance_level=coll.relevance_level
            )
            cells = " | ".join(f"{ev['aggregate'][m]:.4f}" for m in METRICS)
            print(f"| {name} | shipped {fs} | {ev['queries']} | {cells} | – | – |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
