"""The held-out evaluation of ``erank train eval``: reranked, first-stage and hybrid nDCG@10."""

from __future__ import annotations

import math
from pathlib import Path

import pytest


def test_eval_reports_reranked_first_stage_and_hybrid_ndcg(tiny_qwen3_dir: Path, toy_data: Path) -> None:
    from erank.training.evaluate import evaluate_model

    # toy eval rows list the positive last, but give it the highest first-stage score
    only_first_stage = evaluate_model(tiny_qwen3_dir, toy_data / "eval.jsonl", alpha=1.0, truncate_length=64)
    assert only_first_stage["first_stage_ndcg@10"] == pytest.approx(0.5)  # input order
    assert only_first_stage["hybrid_ndcg@10"] == pytest.approx(1.0)  # by first-stage score
    assert only_first_stage["queries"] == 3 and only_first_stage["pairs"] == 9
    # label0_share and expected_ndcg@10 against the model's scores read here, independently
    label0, pairs, gains = _independent_label0_and_expected_ndcg(tiny_qwen3_dir, toy_data / "eval.jsonl")
    assert pairs == 9
    assert only_first_stage["label0_share"] == pytest.approx(label0 / pairs)
    assert only_first_stage["expected_ndcg@10"] == pytest.approx(sum(gains) / len(gains))
    only_model = evaluate_model(tiny_qwen3_dir, toy_data / "eval.jsonl", alpha=0.0, truncate_length=64)
    assert only_model["hybrid_ndcg@10"] == pytest.approx(only_model["ndcg@10"])


def _independent_label0_and_expected_ndcg(model: Path, eval_path: Path) -> tuple[int, int, list[float]]:
    """Labels 0 and pairs, and per query the nDCG@10 of the ranking by expected score (one relevant
    document per toy query: nDCG = 1 / log2(1 + its rank))."""
    from erank import Reranker
    from erank.training.data import read_jsonl

    rr = Reranker(str(model), mode="direct")
    label0 = pairs = 0
    gains = []
    for row in read_jsonl(eval_path):
        cands = row["candidates"][:10]
        res = rr.score(row["query"], [c["content"] for c in cands], row["instruction"], 64)
        label0 += sum(1 for sc in res.scores if sc.label == 0)
        pairs += len(cands)
        expected = [float(sc.expected_score) for sc in res.scores]
        assert len(set(expected)) == len(expected)  # no ties: the ranking is unambiguous
        order = sorted(range(len(cands)), key=lambda i: -expected[i])
        relevant = {d for d, g in row["qrels"].items() if g > 0}
        rank = next(k for k, i in enumerate(order, 1) if cands[i]["docid"] in relevant)
        gains.append(1.0 / math.log2(1 + rank))
    return label0, pairs, gains


def test_eval_rejects_an_alpha_outside_0_1(tiny_qwen3_dir: Path, toy_data: Path) -> None:
    from erank.errors import InputError
    from erank.training.evaluate import evaluate_model

    with pytest.raises(InputError, match="alpha"):
        evaluate_model(tiny_qwen3_dir, toy_data / "eval.jsonl", alpha=1.5)


def test_the_train_eval_command_takes_the_shared_options(
    tiny_qwen3_dir: Path, toy_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from erank.cli import main

    eval_file = str(toy_data / "eval.jsonl")
    args = [
        "--model",
        str(tiny_qwen3_dir),
        eval_file,
        "--queries",
        "2",
        "--top-k",
        "2",
        "--truncate-length",
        "64",
    ]
    assert main(["train", "eval", *args]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert (result["queries"], result["pairs"]) == (2, 4)  # the first 2 queries by id, 2 candidates each
    assert out.err == ""


def test_eval_logs_its_progress_with_an_eta(
    tiny_qwen3_dir: Path, toy_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A long held-out evaluation is not silent: every 10 queries an INFO line with count and ETA."""
    import logging

    from erank import Reranker
    from erank.training.data import read_jsonl
    from erank.training.evaluate import evaluate_reranker

    base = read_jsonl(toy_data / "eval.jsonl")
    rows = [{**r, "qid": f"{r['qid']}-{i}"} for i in range(4) for r in base]  # 12 queries
    rr = Reranker(str(tiny_qwen3_dir), mode="direct")
    with caplog.at_level(logging.INFO, logger="erank.training.evaluate"):
        out = evaluate_reranker(rr, rows, truncate_length=64, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluating:")]
    assert out["queries"] == 12
    assert len(lines) == 2, lines
    assert "10/12 queries" in lines[0] and "ETA" in lines[0]
    assert "12/12 queries" in lines[1]
