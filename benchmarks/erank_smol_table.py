"""The held-out table of the trained default (paper Table 5 shape) on TREC DL 2021, BM25 top 100.

Reads the ``erank train eval`` outputs that ``EVAL=1 bash scripts/train-erank-smol.sh`` writes
(base, SFT, SFT + RL on ``runs/smol/data/eval.jsonl``), computes the all-MiniLM-L6-v2 bi-encoder
row on the same candidates (cosine; and its alpha-0.2 hybrid with BM25), and prints one Markdown
table.

    .venv/bin/python benchmarks/erank_smol_table.py [--eval runs/smol/data/eval.jsonl] [--alpha 0.2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = [
    ("base (SmolLM2-135M, ERank prompt)", "runs/smol/eval-smollm2-135m.json"),
    ("SFT", "runs/smol/eval-runs_smol_sft_adapter.json"),
    ("SFT + RL (erank-smol, shipped)", "runs/smol/eval-runs_smol_rl_adapter.json"),
]


def minilm_row(eval_file: Path, alpha: float) -> dict[str, float]:
    from erank.scoring import hybrid_scores
    from erank.training.blend import TeacherScorer
    from erank.training.data import read_jsonl
    from erank.training.evaluate import ndcg_at_10

    teacher = TeacherScorer()
    qrels, run, hyb, first = {}, {}, {}, {}
    for r in read_jsonl(eval_file):
        if not any(g > 0 for g in r["qrels"].values()):
            continue
        c = r["candidates"][:100]
        s = teacher.score(r["query"], [x["content"] for x in c])
        q = r["qid"]
        qrels[q] = {d: int(g) for d, g in r["qrels"].items()}
        run[q] = {x["docid"]: v for x, v in zip(c, s, strict=True)}
        first[q] = {x["docid"]: float(len(c) - i) for i, x in enumerate(c)}
        fused = hybrid_scores(
            [{"first_stage_score": x["score"], "rank_score": v} for x, v in zip(c, s, strict=True)],
            alpha,
            sort=False,
        )
        hyb[q] = {x["docid"]: f["hybrid_score"] for x, f in zip(c, fused, strict=True)}
    return {
        "bm25": ndcg_at_10(qrels, first),
        "minilm": ndcg_at_10(qrels, run),
        "minilm_hybrid": ndcg_at_10(qrels, hyb),
        "queries": float(len(run)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--eval", default="runs/smol/data/eval.jsonl")
    ap.add_argument("--alpha", type=float, default=0.2)
    args = ap.parse_args()
    mini = minilm_row(Path(args.eval), args.alpha)
    print(f"TREC DL 2021 (held out), BM25 top 100, {int(mini['queries'])} queries, nDCG@10\n")
    print("| ranking | s x P(s) | expected score | hybrid (expected, alpha 0.2) | most probable labels |")
    print("|---|---|---|---|---|")
    print(f"| BM25 | {mini['bm25']:.4f} | | | |")
    print(f"| all-MiniLM-L6-v2 bi-encoder | {mini['minilm']:.4f} | | {mini['minilm_hybrid']:.4f} | |")
    for name, path in ROWS:
        p = Path(path)
        if not p.is_file() or not p.read_text().strip():
            print(f"| {name} | not run | | | |")
            continue
        m = json.loads(p.read_text())
        dist = m.get("label_distribution", {})
        total = sum(dist.values()) or 1
        top = ", ".join(
            f"{k}: {100 * v / total:.0f}%" for k, v in sorted(dist.items(), key=lambda kv: -kv[1])[:4]
        )
        print(
            f"| {name} | {m['ndcg@10']:.4f} | {m.get('expected_ndcg@10', float('nan')):.4f} | "
            f"{m.get('expected_hybrid_ndcg@10', float('nan')):.4f} | {top} |"
        )


if __name__ == "__main__":
    main()
