"""The default model (SmolLM2-135M, ERank direct mode) reranking the TREC DL 2020 BM25 top-20.

Runs ``erank eval`` on ../shared/data/trec-dl20-passage (54 judged queries) with hybrid alpha 0.2
and the alpha sweep, writing runs, metrics.json, report.md and plots to OUT. Resumable: scores are
cached in OUT/scores.sqlite, so a second run recomputes nothing.

    flock /tmp/erank-heavy.lock .venv/bin/python benchmarks/eval_dl20_rerank.py --out /tmp/erank-eval-dl20
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "trec-dl20-passage"))
    ap.add_argument("--top-k", default="20")
    ap.add_argument("--queries", default=None, help="only the first N judged queries")
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default="/tmp/erank-eval-dl20")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from erank.cli import main as erank_main

    argv = ["eval", "--data", args.data, "--first-stage", "bm25", "--top-k", args.top_k, "--mode", "direct"]
    argv += ["--alpha", "0.2", "--out", args.out]
    if args.queries:
        argv += ["--queries", args.queries]
    if args.model:
        argv += ["--model", args.model]
    return erank_main(argv)


if __name__ == "__main__":
    sys.exit(main())
