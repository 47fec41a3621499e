"""Teacher labelling (spec 3.1) through a real erank engine: k runs, the run closest to the mean, length filter."""

import random
from pathlib import Path

from erank import Reranker
from erank.training.config import DataConfig, SourceConfig, TeacherConfig
from erank.training.data import _teacher_label


def _cfg(tmp_path: Path, model: Path, **teacher: object) -> DataConfig:
    return DataConfig(
        sources=[SourceConfig(name="s", format="beir", path=tmp_path)],
        output_dir=tmp_path / "out",
        labels="teacher",
        teacher=TeacherConfig(model=str(model), **teacher),
        truncate_length=64,
    )


def test_reasoning_teacher_keeps_the_reasoning_and_the_score(
    tmp_path: Path, answering_tiny_dir: Path
) -> None:
    cfg = _cfg(tmp_path, answering_tiny_dir, mode="reasoning", runs=3, max_output_tokens=24)
    teacher = Reranker(str(answering_tiny_dir), mode="reasoning", max_new_tokens=24)
    out = _teacher_label(teacher, cfg, "a query", "a document", "beir", random.Random(0))
    assert out == {"score": 7, "reasoning": "short", "runs": [7, 7, 7]}


def test_outputs_over_the_length_limit_are_dropped(tmp_path: Path, answering_tiny_dir: Path) -> None:
    # A budget of 4 tokens ends every output before its answer: all runs dropped, the pair too.
    cfg = _cfg(tmp_path, answering_tiny_dir, mode="reasoning", runs=2, max_output_tokens=4)
    teacher = Reranker(str(answering_tiny_dir), mode="reasoning", max_new_tokens=4)
    assert _teacher_label(teacher, cfg, "a query", "a document", "beir", random.Random(0)) is None


def test_direct_teacher_samples_k_runs_and_keeps_the_one_closest_to_their_mean(
    tmp_path: Path, tiny_qwen3_dir: Path
) -> None:
    cfg = _cfg(tmp_path, tiny_qwen3_dir, mode="direct", runs=5, temperature=3.0)
    teacher = Reranker(str(tiny_qwen3_dir), mode="direct")
    out = _teacher_label(teacher, cfg, "a query", "a document", "beir", random.Random(1))
    assert out is not None and len(out["runs"]) == 5 and all(0 <= r <= 10 for r in out["runs"])
    mean = sum(out["runs"]) / 5
    assert abs(out["score"] - mean) == min(abs(r - mean) for r in out["runs"])
