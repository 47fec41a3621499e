"""The transformers engine: shared-prefix KV reuse, token-budget batching, OOM halving, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from erank.engines.base import GenerateRequest, LogprobRequest
from erank.engines.transformers import TransformersEngine
from erank.errors import InputError
from erank.methods import create_method

from .conftest import DOCS, QUERY


def _engine(path: Path, **kw: object) -> TransformersEngine:
    return TransformersEngine(str(path), device="cpu", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("fixture", ["tiny_qwen3_dir", "tiny_llama_dir"])
def test_shared_prefix_equals_plain_path_direct(fixture: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)
    plain, shared = _engine(path, share_prefix=False), _engine(path, share_prefix=True, batch_tokens=600)
    a = create_method("erank", plain, mode="direct").rerank(QUERY, DOCS + ["x" * 300, "short"])
    b = create_method("erank", shared, mode="direct").rerank(QUERY, DOCS + ["x" * 300, "short"])
    for sa, sb in zip(a.scores, b.scores, strict=True):
        assert sa.label == sb.label
        assert sb.score == pytest.approx(sa.score, abs=1e-4)
        assert sb.distribution == pytest.approx(sa.distribution, abs=1e-4)
    assert a.ranking == b.ranking
    # the prefix ran once: far fewer tokens went through the model
    assert shared.stats.prompt_tokens < 0.7 * plain.stats.prompt_tokens


def test_prefix_groups_mixed_queries_in_one_call(tiny_qwen3_dir: Path) -> None:
    """Two queries' prompts in one call share their common head; a lone prompt takes the plain path."""
    plain, shared = _engine(tiny_qwen3_dir, share_prefix=False), _engine(tiny_qwen3_dir)
    m = create_method("erank", shared, mode="direct")
    prompts = [
        m.engine.tokenizer.encode_prompt(m.build_prompt(q, d, "i")) for q in ("rust", "tea") for d in DOCS
    ]
    prompts.append(shared.tokenizer.encode_prompt("a lone prompt that shares nothing"))
    reqs = [LogprobRequest(p, [10, 11, 12], extension=[13]) for p in prompts]
    groups = shared._prefix_groups([r.prompt_ids + r.extension for r in reqs], [2] * len(reqs))
    shared_groups = [(p, g) for p, g in groups if p > 0]
    assert len(shared_groups) == 1 and sorted(shared_groups[0][1]) == list(range(8))
    # the shared part stops where the two queries differ
    assert shared_groups[0][0] == min(
        next(k for k, (x, y) in enumerate(zip(prompts[0], prompts[4], strict=False)) if x != y),
        len(prompts[0]),
    )
    assert any(p == 0 and len(g) == 1 for p, g in groups)
    out_plain, out_shared = plain.logprobs(reqs), shared.logprobs(reqs)
    for x, y in zip(out_plain, out_shared, strict=True):
        assert len(y.steps) == 2
        for sx, sy in zip(x.steps, y.steps, strict=True):
            assert sy == pytest.approx(sx, abs=1e-4)


def test_token_budget_does_not_change_scores(tiny_llama_dir: Path) -> None:
    small, big = _engine(tiny_llama_dir, batch_tokens=64), _engine(tiny_llama_dir, batch_tokens=100_000)
    docs = [("word " * n).strip() for n in (1, 5, 40, 80, 3, 60)]
    a = create_method("erank", small, mode="direct").rerank(QUERY, docs)
    b = create_method("erank", big, mode="direct").rerank(QUERY, docs)
    assert [s.score for s in a.scores] == pytest.approx([s.score for s in b.scores], abs=1e-4)
    assert small.stats.calls > big.stats.calls  # the small budget really split the work


def test_batches_respect_budget_after_sorting(tiny_llama_dir: Path) -> None:
    e = _engine(tiny_llama_dir, batch_tokens=100, max_batch_size=8)
    lengths = [50, 10, 30, 10, 20, 90, 10]
    batches = list(e._batches(lengths))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 100  # padding included
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)  # shortest first: little padding


def test_oom_halves_the_batch(tiny_llama_dir: Path) -> None:
    """No CUDA here: the out-of-memory error is raised by the test's batch function for rows > 2.

    What is tested is the engine's reaction (halve and retry, every item run once).
    """
    e = _engine(tiny_llama_dir)
    done: list[list[int]] = []

    def fn(batch: list[int]) -> None:
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("simulated")
        done.append(batch)

    e._run_with_oom_retry(list(range(7)), fn)
    assert sorted(i for b in done for i in b) == list(range(7))
    assert max(len(b) for b in done) <= 2
    with pytest.raises(torch.cuda.OutOfMemoryError):
        e._run_with_oom_retry([0], lambda b: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("x")))


def test_reasoning_generation_from_shared_prefix_equals_plain(tiny_qwen3_dir: Path) -> None:
    """Reasoning-mode requests: greedy tokens and the recorded score log-probabilities are the same
    whether generation continues from the shared prefix cache or runs from scratch."""
    plain, shared = _engine(tiny_qwen3_dir, share_prefix=False), _engine(tiny_qwen3_dir)
    m = create_method("erank", shared, mode="reasoning", max_new_tokens=12)
    prompts = [shared.tokenizer.encode_prompt(m.build_prompt(QUERY, d, "Judge relevance.")) for d in DOCS]
    score_ids = m._all_score_ids
    reqs = [
        GenerateRequest(p, max_new_tokens=12, stop=["</answer>"], logprob_token_ids=score_ids)
        for p in prompts
    ]
    a, b = plain.generate(reqs), shared.generate(reqs)
    assert shared.stats.prompt_tokens < plain.stats.prompt_tokens
    for x, y in zip(a, b, strict=True):
        assert y.token_ids == x.token_ids and y.text == x.text and y.finish_reason == x.finish_reason
        assert len(y.step_logprobs) == len(y.token_ids) > 0
        for sx, sy in zip(x.step_logprobs, y.step_logprobs, strict=True):
            assert sy == pytest.approx(sx, abs=1e-4)


def test_generate_stops_and_budget_with_shared_prefix(tiny_qwen3_dir: Path) -> None:
    e = _engine(tiny_qwen3_dir)
    head = e.tokenizer.encode_prompt("a common head of the prompt " * 4)
    reqs = [GenerateRequest(head + e.tokenizer.encode(t), max_new_tokens=5) for t in ("one", "two three")]
    out = e.generate(reqs)
    ref = _engine(tiny_qwen3_dir, share_prefix=False).generate(reqs)
    assert [o.token_ids for o in out] == [o.token_ids for o in ref]
    assert all(len(o.token_ids) <= 5 for o in out)


def test_empty_prompt_is_an_input_error(tiny_qwen3_dir: Path) -> None:
    e = _engine(tiny_qwen3_dir)
    with pytest.raises(InputError, match="empty prompt"):
        e.logprobs([LogprobRequest([], [1, 2])])
    with pytest.raises(InputError, match="max_new_tokens"):
        e.generate([GenerateRequest([1, 2], max_new_tokens=0)])


@pytest.mark.slow
def test_shared_prefix_equals_plain_on_the_default_model(tf_default: TransformersEngine) -> None:
    plain = TransformersEngine(
        model_obj=tf_default.model, tokenizer_obj=tf_default.hf_tokenizer, share_prefix=False
    )
    a = create_method("erank", plain, mode="direct").rerank(QUERY, DOCS[:2])
    b = create_method("erank", tf_default, mode="direct").rerank(QUERY, DOCS[:2])
    assert [s.score for s in b.scores] == pytest.approx([s.score for s in a.scores], abs=1e-4)
