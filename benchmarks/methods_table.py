r"""The methods comparison table (issue 5): every method, one model, the DL20 BM25 top-20 candidates.

A thin preset over ``erank compare`` (``erank.evaluation.compare.run_comparison``): the same
candidates, qrels and instruction for every method; slow generative methods get fewer queries
(``--queries-for``). Prints the markdown table and writes runs, ``rows.json`` and ``table.md``.

    taskset -c 0 .venv/bin/python benchmarks/methods_table.py --threads 1 --queries 54 \
        --queries-for rank1=10,setwise=5,pairwise=5 --out /tmp/erank-methods

(the run in docs/benchmarks.md; the defaults, 3 queries and 1 for the slow methods, are a smoke run).

Any model: ``--model Alibaba-NLP/ERank-4B`` (then raise the budgets with ``--set``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from erank.evaluation.compare import format_table, run_comparison  # noqa: E402
from erank.evaluation.compare_cli import parse_queries_for, parse_sets  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DL20 = REPO.parent / "shared" / "data" / "trec-dl20-passage" / "BM25" / "retrieve_results_dl20_top100.json"

METHODS = "first,yesno,erank,erank-0-3,listwise,groupwise,rank1,setwise,pairwise"
#: budgets that keep a 135M model on 2 CPU cores within ~40 minutes for the whole table
DEFAULT_SETS = [
    "rank1.max_new_tokens=48",
    "listwise.max_new_tokens=130",
    "pairwise.top_k=1",
    "setwise.mode=direct",
    "setwise.top_k=10",
    "groupwise.group_size=10",
]
DEFAULT_QUERIES_FOR = "rank1=1,pairwise=1,setwise=1"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DL20))
    p.add_argument("--model", default=None)
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--queries", type=int, default=3)
    p.add_argument("--queries-for", default=DEFAULT_QUERIES_FOR)
    p.add_argument("--set", action="append", default=None, help="METHOD.ARG=VALUE (replaces the presets)")
    p.add_argument("--truncate-length", type=int, default=128)
    p.add_argument("--out", default="/tmp/erank-methods")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a shared machine)"
    )
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    rows = run_comparison(
        args.data,
        [m.strip() for m in args.methods.split(",") if m.strip()],
        model=args.model,
        top_k=args.top_k,
        queries=args.queries,
        queries_for=parse_queries_for(args.queries_for),
        method_kwargs=parse_sets(args.set if args.set is not None else DEFAULT_SETS),
        truncate_length=args.truncate_length,
        out_dir=args.out,
    )
    sys.stdout.write(format_table(rows))
    sys.stdout.write(
        f"\ncommand: {' '.join(sys.argv)}\ntotal wall time: {time.perf_counter() - start:.0f} s\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
