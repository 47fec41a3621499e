"""The held-out evaluation of ``erank train eval``: reranked, first-stage and hybrid nDCG@10."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_eval_reports_reranked_first_stage_and_hybrid_ndcg(tiny_qwen3_dir: Path, toy_data: Path) -> None:
    from erank.training.evaluate import evaluate_model

    # toy eval rows list the positive last, but give it the highest first-stage score
    only_first_stage = evaluate_model(tiny_qwen3_dir, toy_data / "eval.jsonl", alpha=1.0, truncate_length=64)
    assert only_first_stage["first_stage_ndcg@10"] == pytest.approx(0.5)  # input order
    assert only_first_stage["hybrid_ndcg@10"] == pytest.approx(1.0)  # by first-stage score
    assert only_first_stage["queries"] == 3 and only_first_stage["pairs"] == 9
    assert 0.0 <= only_first_stage["label0_share"] <= 1.0
    assert 0.0 < only_first_stage["expected_ndcg@10"] <= 1.0  # direct mode has the distributions
    only_model = evaluate_model(tiny_qwen3_dir, toy_data / "eval.jsonl", alpha=0.0, truncate_length=64)
    assert only_model["hybrid_ndcg@10"] == pytest.approx(only_model["ndcg@10"])


def test_eval_rejects_an_alpha_outside_0_1(tiny_qwen3_dir: Path, toy_data: Path) -> None:
    from erank.errors import InputError
    from erank.training.evaluate import evaluate_model

    with pytest.raises(InputError, match="alpha"):
        evaluate_model(tiny_qwen3_dir, toy_data / "eval.jsonl", alpha=1.5)
