"""Blended labels (judgement band + teacher percentile) on real DL20/DL21 files and the bundled MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

from erank.training.blend import band_target, percentiles
from erank.training.config import DataConfig


def test_band_and_percentile_keep_the_grade_order() -> None:
    assert percentiles([3.0, 1.0, 2.0, 2.0]) == [1.0, 0.0, 0.5, 0.5]
    # the worst passage of a grade still scores above the best one of the grade below
    assert band_target(2, 3, 0.0) >= band_target(1, 3, 1.0)
    assert band_target(0, 3, 0.0) == 0.0 and band_target(3, 3, 1.0) == 10.0


def test_blend_dataset_on_dl20_with_dl21_held_out(shared_data: Path, tmp_path: Path) -> None:
    from erank.training.data import build_dataset

    dl20 = shared_data / "trec-dl20-passage"
    cfg = DataConfig.model_validate(
        {
            "output_dir": str(tmp_path / "d"),
            "labels": "blend",
            "eval_sources": ["dl21"],
            "sources": [
                {
                    "name": "dl20",
                    "format": "trec-dl",
                    "path": str(dl20),
                    "max_queries": 2,
                    "candidates": "BM25/retrieve_results_dl20_top100.json",
                    "qrels": "qrels.dl20-passage.txt",
                    "pools": ["SPLADE_P_P_ENSEMBLE_DISTIL/retrieve_results_dl20_top100.json"],
                    "instruction": "trec-dl",
                },
                {
                    "name": "dl21",
                    "format": "trec-dl",
                    "path": str(shared_data / "trec-dl21-passage"),
                    "max_queries": 1,
                    "candidates": "BM25/retrieve_results_dl21_top100.json",
                    "qrels": "qrels.dl21-passage.txt",
                    "instruction": "trec-dl",
                },
            ],
        }
    )
    stats = build_dataset(cfg)
    rows = [json.loads(x) for x in (tmp_path / "d/train.jsonl").read_text().splitlines()]
    assert stats["queries"] == 2 and stats["pairs"] == len(rows) > 50
    assert all(r["qid"].startswith("dl20/") for r in rows)  # nothing of the held-out year
    for r in rows:  # every target sits in its grade's band
        assert 2.5 * r["grade"] <= r["target"] <= 2.5 * (r["grade"] + 1), r
    # inside a grade, a higher teacher score never gets a lower target
    for q in {r["qid"] for r in rows}:
        g0 = sorted((r["teacher_score"], r["target"]) for r in rows if r["qid"] == q and r["grade"] == 0)
        assert [t for _, t in g0] == sorted(t for _, t in g0)
    evals = [json.loads(x) for x in (tmp_path / "d/eval.jsonl").read_text().splitlines()]
    assert len(evals) == 1 and evals[0]["qid"].startswith("dl21/") and len(evals[0]["candidates"]) == 100
    assert sum(stats["label_distribution"].values()) == len(rows)


def test_a_collection_of_relevant_only_qrels_gets_its_negatives_from_the_bm25_top(
    shared_data: Path, tmp_path: Path
) -> None:
    """Cranfield: qrels list (mostly) relevant documents; with ``unjudged_depth`` the BM25 top N's
    unjudged documents become grade-0 negatives, and ``drop_judged_zero`` leaves out the
    collection's grade-0 rows (the questions' source papers)."""
    from erank.training.data import build_dataset

    cfg = DataConfig.model_validate(
        {
            "output_dir": str(tmp_path / "d"),
            "labels": "blend",
            "sources": [
                {
                    "name": "cranfield",
                    "format": "beir",
                    "path": str(shared_data / "cranfield"),
                    "max_queries": 6,
                    "depth": 10,
                    "unjudged_depth": 10,
                    "drop_judged_zero": True,
                }
            ],
        }
    )
    build_dataset(cfg)
    rows = [json.loads(x) for x in (tmp_path / "d/train.jsonl").read_text().splitlines()]
    qrels: dict[str, dict[str, int]] = {}
    for line in (shared_data / "cranfield/qrels/test.tsv").read_text().splitlines()[1:]:
        q, d, g = line.split("\t")
        qrels.setdefault(q, {})[d] = int(g)
    per_q: dict[str, list[dict]] = {}
    for r in rows:
        per_q.setdefault(r["qid"], []).append(r)
    assert per_q and all(len(v) <= 10 for v in per_q.values())
    negatives = [r for r in rows if r["grade"] == 0]
    assert negatives and all(r["target"] <= 2.0 for r in negatives)  # band 0 of grades 0-4
    for r in negatives:  # unjudged, never a judged grade-0 source paper
        assert r["docid"] not in qrels[r["qid"].split("/", 1)[1]]
    assert any(r["grade"] > 0 for r in rows)
