"""(1) The physical limit on this CPU and how close direct mode gets; (6) peak RSS per budget.

Ceiling: pairs/s = matmul_rate / (2 x non-embedding parameters x tokens per pair) (+ the LM head
for the 2 positions read, negligible). Direct mode runs the plain path (shared prefix off, so all
256 tokens of every pair are computed, as the ceiling assumes) at several token budgets and thread
counts; each setting runs in a fresh subprocess so its peak RSS is its own.

    flock /tmp/erank-heavy.lock .venv/bin/python benchmarks/speed_ceiling.py --pairs 16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

import speed_common as sc


def child(budget: int, threads: int, pairs: int, tokens: int) -> None:
    torch.set_num_threads(threads)
    from erank.engines.transformers import TransformersEngine
    from erank.methods import create_method

    engine = TransformersEngine(str(sc.default_dir()), device="cpu", batch_tokens=budget, share_prefix=False)
    m = create_method("erank", engine, mode="direct")
    docs = sc.docs_for_length(m, tokens, pairs)
    m.rerank(sc.QUERY, docs[:2])  # warm-up
    rss0 = sc.peak_rss_mib()
    start = time.perf_counter()
    res = m.rerank(sc.QUERY, docs)
    dt = time.perf_counter() - start
    rate = sc.matmul_gflops()
    flops = 2 * sc.non_embedding_params(engine.model) * tokens
    print(
        json.dumps(
            {
                "budget": budget,
                "threads": threads,
                "pairs": pairs,
                "tokens": tokens,
                "mean_prompt_tokens": sum(s.prompt_tokens for s in res.scores) / pairs,
                "pairs_per_s": pairs / dt,
                "matmul_gflops": rate,
                "ceiling_pairs_per_s": rate * 1e9 / flops,
                "achieved_gflops": pairs * flops / dt / 1e9,
                "peak_rss_mib": sc.peak_rss_mib(),
                "rss_before_mib": rss0,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--budgets", default="1024,4096,16384")
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--child", nargs=2, type=int)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], a.pairs, a.tokens)
        return
    rows = []
    threads = [int(t) for t in a.threads.split(",")]
    settings = [(int(b), threads[0]) for b in a.budgets.split(",")] + [
        (int(a.budgets.split(",")[1]), t) for t in threads[1:]
    ]
    for budget, t in settings:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(budget),
            str(t),
            "--pairs",
            str(a.pairs),
            "--tokens",
            str(a.tokens),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        rows.append(row)
        print(
            f"budget={budget:6d} threads={t} pairs/s={row['pairs_per_s']:.2f} ceiling={row['ceiling_pairs_per_s']:.2f} "
            f"fraction={row['pairs_per_s'] / row['ceiling_pairs_per_s']:.0%} matmul={row['matmul_gflops']:.1f} GFLOP/s "
            f"achieved={row['achieved_gflops']:.1f} GFLOP/s peakRSS={row['peak_rss_mib']:.0f} MiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
