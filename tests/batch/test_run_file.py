"""Batch run files never tie under trec_eval's float32 comparison.

trec_eval re-sorts a run by score (compared in single precision) and breaks ties by docid, so two
scores that float32 cannot tell apart would put documents in another order than erank's. A shard
scored through the real pipeline code (the tiny random model, no Ray cluster), with documents of
equal text (equal scores) and documents that come closer than a float32 step, must give a
``run.trec`` whose scores, read as float32, fall strictly within every query.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from erank.batch.pipeline import ShardScorer, _assemble  # noqa: E402
from erank.batch.rows import format_trec_line, strictly_decreasing  # noqa: E402
from erank.datasets.formats import strictly_decreasing as datasets_strictly_decreasing  # noqa: E402
from erank.datasets.formats import write_run  # noqa: E402
from erank.datasets.types import Candidate  # noqa: E402


def _float32_scores_by_query(path: Path) -> dict[str, list[np.float32]]:
    by_qid: dict[str, list[np.float32]] = {}
    for line in path.read_text().splitlines():
        qid, _q0, _docid, _rank, score, _tag = line.split()
        by_qid.setdefault(qid, []).append(np.float32(score))
    return by_qid


def _strictly_falling(scores: list[np.float32]) -> bool:
    return all(a > b for a, b in zip(scores, scores[1:], strict=False))


def test_batch_run_file_scores_fall_strictly_as_float32(
    tiny_qwen3_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # outside a cluster: the scorer must not start a local Ray to ask for its node id
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    for sub in ("scores", "errors", "_done"):
        (out / sub).mkdir(parents=True)
    settings = {
        "model": str(tiny_qwen3_dir),
        "engine": "transformers",
        "method": "erank",
        "mode": "direct",
        "method_kwargs": {},
        "batch_tokens": None,
        "instruction": "beir",
        "truncate_length": 64,
    }
    rows = []
    for qid in ("1", "2"):
        for i in range(6):
            # three texts, each twice: equal texts get equal scores, which the run must separate
            rows.append(
                {
                    "shard": 0,
                    "qid": qid,
                    "query": f"query {qid}",
                    "docid": f"d{i}",
                    "text": f"passage about topic {i % 3}",
                    "first_stage_score": None,
                    "error": None,
                    "source": "pairs.jsonl",
                    "raw": None,
                }
            )
    scorer = ShardScorer(settings, str(out), cpus=1)
    try:
        scorer(pa.Table.from_pylist(rows))
    finally:
        scorer.reranker.close()
    pairs, queries, _ = _assemble(out, "erank")
    assert (pairs, queries) == (12, 2)
    by_qid = _float32_scores_by_query(out / "run.trec")
    assert sorted(by_qid) == ["1", "2"]
    for qid, scores in by_qid.items():
        assert len(scores) == 6
        assert _strictly_falling(scores), (qid, scores)


@pytest.mark.parametrize(
    "scores",
    [
        [0.5, 0.5, 0.5, 0.2, 0.2, 0.1],
        [7.123456, 7.1234561, 7.1234562, 7.1234562],  # closer than a float32 step, not equal
        [1e6, 1e6, 1e6 - 0.01],
        [1e-20, 1e-20, 0.0, 0.0, -0.0, -1e-20],
        [float("inf"), float("inf"), 3.0, float("nan"), float("-inf"), float("-inf")],
    ],
)
def test_written_runs_never_tie_as_float32(tmp_path: Path, scores: list[float]) -> None:
    run = {"q": [Candidate(f"d{i}", s) for i, s in enumerate(scores)]}
    write_run(run, tmp_path / "eval.run")  # evaluation's writer
    with open(tmp_path / "batch.run", "w", encoding="utf-8") as fh:  # batch's line format
        for rank, (i, s) in enumerate(zip(range(len(scores)), strictly_decreasing(scores), strict=True), 1):
            fh.write(format_trec_line("q", f"d{i}", rank, s, "erank"))
    for name in ("eval.run", "batch.run"):
        got = _float32_scores_by_query(tmp_path / name)["q"]
        assert len(got) == len(scores) and _strictly_falling(got), (name, got)
        assert all(np.isfinite(got)), (name, got)


def test_batch_and_evaluation_share_one_rule() -> None:
    assert strictly_decreasing is datasets_strictly_decreasing
