"""Teacher labelling (spec 3.1): k independent sampled runs, the run closest to their mean, length filter."""

from __future__ import annotations

import random
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from erank import Reranker
from erank.errors import InputError
from erank.training.config import DataConfig, SourceConfig, TeacherConfig
from erank.training.teacher import _sample_transformers, _teacher_label, check_teacher, select_closest_to_mean


def _cfg(tmp_path: Path, model: Path | str, **teacher: object) -> DataConfig:
    return DataConfig(
        sources=[SourceConfig(name="s", format="beir", path=tmp_path)],
        output_dir=tmp_path / "out",
        labels="teacher",
        teacher=TeacherConfig(model=str(model), **teacher),
        truncate_length=64,
    )


class _DirectTeacher:
    """A direct-mode teacher with a fixed 0..10 distribution (counts its forward passes)."""

    def __init__(self, dist: list[float]) -> None:
        self.dist = dist
        self.calls = 0

    def score(self, query: str, docs: list[str], instruction: str, truncate: int, **kw: Any) -> Any:
        self.calls += 1
        return types.SimpleNamespace(scores=[types.SimpleNamespace(distribution=list(self.dist))])


SPREAD = [0.0, 0.0, 0.3, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 0.4, 0.0]


def test_direct_runs_are_independent_draws_and_the_one_closest_to_their_mean_is_kept(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "m", mode="direct", runs=5, temperature=1.0)
    teacher = _DirectTeacher(SPREAD)
    out = _teacher_label(teacher, cfg, "q", "d", "beir", random.Random(0))
    assert out is not None and teacher.calls == 1  # one forward pass, k draws from it
    runs = out["runs"]
    assert len(runs) == 5 and set(runs) <= {2, 5, 9} and len(set(runs)) > 1, runs
    assert out["score"] == runs[select_closest_to_mean(runs)]
    # seeded: the same stream gives the same runs, another stream other runs
    assert _teacher_label(teacher, cfg, "q", "d", "beir", random.Random(0)) == out
    others = [_teacher_label(teacher, cfg, "q", "d", "beir", random.Random(s))["runs"] for s in range(1, 6)]
    assert any(r != runs for r in others)


def test_direct_runs_follow_the_distribution_at_the_temperature(tmp_path: Path) -> None:
    teacher = _DirectTeacher(SPREAD)
    warm = _teacher_label(
        teacher, _cfg(tmp_path, "m", mode="direct", runs=3000), "q", "d", "", random.Random(3)
    )
    share = Counter(warm["runs"])
    assert {k: round(v / 3000, 1) for k, v in share.items()} == {2: 0.3, 5: 0.3, 9: 0.4}
    # a low temperature sharpens p ** (1 / T) onto the mode: (0.3 / 0.4) ** 20 = 0.3% per other label
    cold = _cfg(tmp_path, "m", mode="direct", runs=200, temperature=0.05)
    assert Counter(_teacher_label(teacher, cold, "q", "d", "", random.Random(3))["runs"])[9] >= 190
    # no mass on any score: the pair is dropped
    assert _teacher_label(_DirectTeacher([0.0] * 11), cold, "q", "d", "", random.Random(3)) is None


def test_direct_teacher_on_a_real_engine_samples_differing_runs(tmp_path: Path, tiny_qwen3_dir: Path) -> None:
    cfg = _cfg(tmp_path, tiny_qwen3_dir, mode="direct", runs=5, temperature=3.0)
    teacher = Reranker(str(tiny_qwen3_dir), mode="direct")
    out = _teacher_label(teacher, cfg, "a query", "a document", "beir", random.Random(1))
    assert out is not None and len(out["runs"]) == 5 and len(set(out["runs"])) > 1, out
    assert out["score"] == out["runs"][select_closest_to_mean(out["runs"])]
    assert _teacher_label(teacher, cfg, "a query", "a document", "beir", random.Random(1)) == out


def test_reasoning_runs_are_sampled_generations_seeded_apart_from_the_global_rng(
    answering_tiny_dir: Path,
) -> None:
    import torch

    from erank.training.teacher import _teacher_prompt_ids

    teacher = Reranker(str(answering_tiny_dir), mode="reasoning", max_new_tokens=24)
    prompt = _teacher_prompt_ids(teacher, "a query", "a document", "beir", 64)
    before = torch.get_rng_state()
    hot = _sample_transformers(teacher.engine, prompt, 4, 3.0, 24, seed=11)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone
    assert len(hot) == 4 and len({text for text, _ in hot}) > 1, hot  # independent draws differ
    assert all(0 < n <= 24 for _, n in hot)
    assert _sample_transformers(teacher.engine, prompt, 4, 3.0, 24, seed=11) == hot  # reproducible
    assert _sample_transformers(teacher.engine, prompt, 4, 3.0, 24, seed=12) != hot
    # at a low temperature the model trained to answer "<think>short</think><answer>7</answer>" does
    cold = _sample_transformers(teacher.engine, prompt, 3, 0.1, 24, seed=11)
    assert [text for text, _ in cold] == ["<think>short</think><answer>7</answer>"] * 3


def test_reasoning_teacher_keeps_the_reasoning_of_the_run_closest_to_the_mean(
    tmp_path: Path,
    tiny_tokenizer,  # noqa: ANN001
) -> None:
    """Through the vLLM path (a stand-in engine): per-run seeds from the data seed, the teacher
    temperature, a run over the length limit dropped, and the kept reasoning is the kept run's."""
    from erank.methods.erank import ERankMethod
    from erank.training.data import _TokenizerOnlyEngine

    answers = {
        0: ("<think>a</think><answer>2</answer>", 6),
        1: ("<think>b</think><answer>9</answer>", 6),
        2: ("<think>c</think><answer>6</answer>", 6),
        3: ("<think>d</think><answer>0</answer>", 99),  # over max_output_tokens: dropped
    }
    seen: list[dict[str, Any]] = []

    class _SamplingParams:
        def __init__(self, **kw: Any) -> None:
            self.kw = kw

    def run(prompts: list[list[int]], params: list[_SamplingParams]) -> list[Any]:
        seen.extend(p.kw for p in params)
        first = params[0].kw["seed"]
        outs = []
        for p in params:
            text, n = answers[p.kw["seed"] - first]
            outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(text=text, token_ids=[1] * n)]))
        return outs

    engine = types.SimpleNamespace(
        name="vllm",
        _vllm=types.SimpleNamespace(SamplingParams=_SamplingParams),
        _run=run,
        stats=types.SimpleNamespace(generated_tokens=0),
    )
    method = ERankMethod(_TokenizerOnlyEngine(tiny_tokenizer), mode="reasoning")
    teacher = types.SimpleNamespace(engine=engine, method=method)
    cfg = _cfg(tmp_path, "m", mode="reasoning", runs=4, temperature=0.7, max_output_tokens=50)
    out = _teacher_label(teacher, cfg, "a query", "a document", "beir", random.Random(0))
    assert out == {"score": 6, "reasoning": "c", "runs": [2, 9, 6]}  # mean 5.67: the 6 is kept
    assert [kw["temperature"] for kw in seen] == [0.7] * 4
    seeds = [kw["seed"] for kw in seen]
    assert len(set(seeds)) == 4 and all(kw["max_tokens"] == 50 for kw in seen)
    seen.clear()
    _teacher_label(teacher, cfg, "a query", "a document", "beir", random.Random(0))
    assert [kw["seed"] for kw in seen] == seeds  # the same data seed draws the same runs


def test_outputs_over_the_length_limit_are_dropped(tmp_path: Path, answering_tiny_dir: Path) -> None:
    # A budget of 4 tokens ends every output before its answer: all runs dropped, the pair too.
    cfg = _cfg(tmp_path, answering_tiny_dir, mode="reasoning", runs=2, max_output_tokens=4)
    teacher = Reranker(str(answering_tiny_dir), mode="reasoning", max_new_tokens=4)
    assert _teacher_label(teacher, cfg, "a query", "a document", "beir", random.Random(0)) is None
    # a single run is the greedy answer, on any engine
    one = _cfg(tmp_path, answering_tiny_dir, mode="reasoning", runs=1, max_output_tokens=24)
    greedy = Reranker(str(answering_tiny_dir), mode="reasoning", max_new_tokens=24)
    assert _teacher_label(greedy, one, "a query", "a document", "beir", random.Random(0)) == {
        "score": 7,
        "reasoning": "short",
        "runs": [7],
    }


def test_greedy_engines_cannot_give_several_reasoning_runs() -> None:
    for engine in ("openai", "llamacpp"):
        with pytest.raises(InputError, match="decodes greedily"):
            check_teacher(TeacherConfig(model="m", engine=engine, mode="reasoning", runs=3), engine)
        check_teacher(TeacherConfig(model="m", engine=engine, mode="reasoning", runs=1), engine)
        check_teacher(TeacherConfig(model="m", engine=engine, mode="direct", runs=3), engine)
    for engine in ("transformers", "vllm"):
        check_teacher(TeacherConfig(model="m", engine=engine, mode="reasoning", runs=3), engine)
