"""(4) llama.cpp versus transformers on CPU, on real TREC DL 2020 BM25 pairs: pairs/s and peak RSS.

Each configuration runs in its own subprocess (so the peak RSS is its own): ERank direct mode on
the untrained base SmolLM2-135M (the embedded erank-smol is a LoRA adapter for the transformers
engine only), the first ``--queries`` DL20 queries with their BM25 top ``--per-query`` passages,
scored one query at a time as ``Reranker.score`` does. transformers runs the dequantised Q4_1
GGUF in its default dtype for this CPU; llama.cpp computes on the Q4_1 weights, one sequence at a
time (``n_seq=1``) and with several sequences per decode (``n_seq=8``, the default). Shared
prefixes are on everywhere.

    flock /tmp/erank-heavy.lock .venv/bin/python benchmarks/speed_llamacpp.py [--queries 4 --per-query 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import speed_common as sc

DL20 = (
    Path(__file__).resolve().parents[2]
    / "shared/data/trec-dl20-passage/BM25/retrieve_results_dl20_top100.json"
)
CONFIGS = {
    "transformers": ("transformers", {}),
    "llamacpp n_seq=1": ("llamacpp", {"n_seq": 1}),
    "llamacpp n_seq=8": ("llamacpp", {"n_seq": 8}),
}


def child(name: str, queries: int, per_query: int) -> None:
    from erank import Reranker

    engine, kw = CONFIGS[name]
    r = Reranker("smollm2-135m", engine=engine, mode="direct", engine_kwargs=kw)
    data = json.loads(DL20.read_text())[:queries]
    r.score(data[0]["query"], [h["content"] for h in data[0]["hits"][:2]], "trec-dl")  # warm-up
    rankings = []
    start = time.perf_counter()
    for e in data:
        res = r.score(e["query"], [h["content"] for h in e["hits"][:per_query]], "trec-dl")
        rankings.append(res.ranking)
    dt = time.perf_counter() - start
    print(
        json.dumps(
            {"pairs_per_s": queries * per_query / dt, "peak_rss_mib": sc.peak_rss_mib(), "rankings": rankings}
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--per-query", type=int, default=16)
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        child(a.child, a.queries, a.per_query)
        return
    rows = {}
    for name in CONFIGS:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--queries",
            str(a.queries),
            "--per-query",
            str(a.per_query),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows[name] = json.loads(out)
    base = rows["transformers"]
    print(f"{a.queries} DL20 queries x {a.per_query} BM25 passages; ratios against transformers, this run")
    for name, row in rows.items():
        top10 = sum(r[:10] == b[:10] for r, b in zip(row["rankings"], base["rankings"], strict=True)) / len(
            row["rankings"]
        )
        print(
            f"{name:18s} {row['pairs_per_s']:6.2f} pairs/s ({row['pairs_per_s'] / base['pairs_per_s']:.2f}x)  "
            f"peak RSS {row['peak_rss_mib']:6.0f} MiB  same top-10 as transformers: {top10:.0%}",
            flush=True,
        )


if __name__ == "__main__":
    main()
