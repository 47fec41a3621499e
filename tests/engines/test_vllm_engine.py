"""The vLLM engine and ``ERank_vLLM``.

vLLM needs a CUDA GPU and cannot be installed on these CPU machines, so these tests inject a
stand-in ``vllm`` module into ``sys.modules``: its ``LLM`` records the arguments and the
``SamplingParams`` it receives and answers with log-probabilities computed by a REAL tiny model
through the transformers engine (the full vocabulary as "top" log-probabilities). What is tested
is what erank builds (engine arguments, requests, sampling parameters) and how it reads vLLM's
output shapes back into scores, which must equal the transformers engine's.
"""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from erank.engines.base import GenerateRequest, LogprobRequest
from erank.engines.transformers import TransformersEngine
from erank.errors import MissingExtraError, ModelLoadError

from .conftest import DOCS, QUERY


class _SamplingParams:
    def __init__(self, **kw: Any) -> None:
        self.kw = kw


def _fake_vllm(model_dir: Path) -> tuple[types.ModuleType, list[Any]]:
    calls: list[Any] = []
    real = TransformersEngine(str(model_dir), device="cpu", share_prefix=False)
    vocab = list(range(len(real.hf_tokenizer)))

    class LLM:
        def __init__(self, **kw: Any) -> None:
            calls.append(("LLM", kw))

        def get_tokenizer(self) -> Any:
            return real.hf_tokenizer

        def generate(
            self, inputs: list[dict[str, list[int]]], params: list[Any], use_tqdm: bool = True
        ) -> list[Any]:
            calls.append(("generate", inputs, params))
            outs = []
            for inp, p in zip(inputs, params, strict=True):
                ids = inp["prompt_token_ids"]
                if p.kw["max_tokens"] == 1:
                    lp = real.logprobs([LogprobRequest(ids, vocab)])[0].steps[0]
                    tok = max(lp, key=lambda t: lp[t])
                    o = types.SimpleNamespace(
                        token_ids=[tok], text="", finish_reason="length", logprobs=[_lp(lp, p.kw["logprobs"])]
                    )
                else:
                    # the random tiny model never writes </answer>: the stand-in stops after 8 tokens
                    g = real.generate(
                        [
                            GenerateRequest(
                                ids, min(8, p.kw["max_tokens"]), p.kw["stop"] or [], logprob_token_ids=vocab
                            )
                        ]
                    )[0]
                    o = types.SimpleNamespace(
                        token_ids=g.token_ids,
                        text=g.text,
                        finish_reason=g.finish_reason,
                        logprobs=[_lp(s, p.kw["logprobs"]) for s in g.step_logprobs],
                    )
                outs.append(types.SimpleNamespace(outputs=[o]))
            return outs

    mod = types.ModuleType("vllm")
    mod.LLM = LLM  # type: ignore[attr-defined]
    mod.SamplingParams = _SamplingParams  # type: ignore[attr-defined]
    return mod, calls


def _lp(step: dict[int, float], k: int) -> dict[int, Any]:
    top = sorted(step, key=lambda t: -step[t])[:k]
    return {t: types.SimpleNamespace(logprob=step[t]) for t in top}


@pytest.fixture
def fake_vllm(tiny_qwen3_dir: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    mod, calls = _fake_vllm(tiny_qwen3_dir)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return calls


def test_direct_mode_requests_and_scores_match_transformers(
    fake_vllm: list[Any], tiny_qwen3_dir: Path
) -> None:
    from erank import Reranker

    vocab_size = 49152
    r = Reranker(
        str(tiny_qwen3_dir),
        engine="vllm",
        mode="direct",
        engine_kwargs={"tensor_parallel_size": 2, "top_logprobs": vocab_size},
    )
    got = r.score(QUERY, DOCS[:2])
    ref = Reranker(str(tiny_qwen3_dir), engine="transformers", mode="direct").score(QUERY, DOCS[:2])
    assert [s.score for s in got.scores] == pytest.approx([s.score for s in ref.scores], abs=1e-4)
    assert got.ranking == ref.ranking
    (_, llm_kw), (_, inputs, params) = fake_vllm[0], fake_vllm[1]
    assert llm_kw["enable_prefix_caching"] is True and llm_kw["tensor_parallel_size"] == 2
    assert llm_kw["max_logprobs"] == vocab_size
    # one request per pair plus one with the "1" of "10" appended (answered from the prefix cache)
    assert len(inputs) == 4
    branch = r.method.score_tokens.branch  # type: ignore[attr-defined]
    assert inputs[1]["prompt_token_ids"] == inputs[0]["prompt_token_ids"] + [branch]
    for p in params:
        assert p.kw["temperature"] == 0.0 and p.kw["max_tokens"] == 1 and p.kw["logprobs"] == vocab_size


def test_reasoning_mode_uses_the_official_settings(fake_vllm: list[Any], tiny_qwen3_dir: Path) -> None:
    from erank import ERank_vLLM

    r = ERank_vLLM(str(tiny_qwen3_dir), tensor_parallel_size=1, top_logprobs=5)
    assert r.mode == "reasoning" and r.engine.name == "vllm"
    res = r.score(QUERY, DOCS[:1], return_reasoning=True)
    _, inputs, params = fake_vllm[1]
    kw = params[0].kw
    assert kw["temperature"] == 0.0 and kw["max_tokens"] == 4096
    assert kw["stop"] == ["</answer>"] and kw["include_stop_str_in_output"] is True and kw["logprobs"] == 5
    assert len(res.scores) == 1 and res.scores[0].generated_tokens > 0  # read back from vLLM's output shape


def test_import_erank_does_not_import_vllm() -> None:
    code = "import sys, erank; from erank import ERank_vLLM; assert 'vllm' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_missing_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch, tiny_qwen3_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes "import vllm" fail
    from erank.engines.vllm import VLLMEngine

    with pytest.raises(MissingExtraError, match=r"erank\[vllm\]"):
        VLLMEngine(str(tiny_qwen3_dir))


def test_an_uncached_hub_id_offline_fails_at_once_saying_how_to_get_it(
    fake_vllm: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from erank import Reranker

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        Reranker("no-such-org/no-such-model", engine="vllm")
    message = str(err.value)
    assert "is not in the local hub cache and the hub is offline" in message
    assert "hf download no-such-org/no-such-model" in message and "\n" not in message
    assert fake_vllm == []  # vLLM was never started
    assert time.perf_counter() - start < 5
