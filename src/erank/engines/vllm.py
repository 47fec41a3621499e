"""The vLLM engine: ``vllm.LLM`` with prefix caching and tensor parallelism (GPU).

Thin on purpose: prompts, score tokens and parsing are the method's, shared with every engine.

* ``logprobs`` (``direct`` mode): one generated token (greedy, ``max_tokens=1``) per request with
  the top-``top_logprobs`` log-probabilities; a forced ``extension`` (the "1" of "10") is one more
  request ``prompt + extension[:j]``, which the prefix cache answers almost for free. A score token
  outside the top ``top_logprobs`` gets probability 0 (raise ``top_logprobs`` and vLLM's
  ``max_logprobs`` together if that matters for a model).
* ``generate`` (``reasoning`` mode): the official ERank vLLM settings, greedy (``temperature=0``),
  up to ``max_new_tokens`` (4096 in the method) with the stop string kept in the output and the
  top log-probabilities at every step.

vLLM needs a CUDA GPU and is not installed on the CPU machines; the requests this engine builds
are tested with a stand-in ``vllm`` module (``tests/engines/test_vllm_engine.py``).

>>> from erank.compat import ERank_vLLM                             # doctest: +SKIP
>>> reranker = ERank_vLLM("Alibaba-NLP/ERank-4B", tensor_parallel_size=2)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from erank.engines import base
from erank.engines.base import Engine, GenerateRequest, GenerateResult, LogprobRequest, LogprobResult
from erank.engines.tokenizers import HFTokenizer
from erank.errors import InputError, require
from erank.models import check_model_available, resolve_model

__all__ = ["VLLMEngine"]

logger = logging.getLogger(__name__)


class VLLMEngine(Engine):
    """Runs a model with ``vllm.LLM``.

    Args:
        model: a hub id or local folder (``None``: the embedded default, a GGUF file).
        tensor_parallel_size: GPUs to shard the model over.
        enable_prefix_caching: reuse the KV cache of shared prompt prefixes (default on).
        top_logprobs: how many log-probabilities vLLM returns per step (its ``max_logprobs``).
        dtype, max_model_len, gpu_memory_utilization, trust_remote_code: passed to ``vllm.LLM``.
        llm_kwargs: any other ``vllm.LLM`` argument.
    """

    name = "vllm"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        top_logprobs: int = 20,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        trust_remote_code: bool = False,
        llm_kwargs: dict[str, Any] | None = None,
        **unused: Any,
    ) -> None:
        super().__init__()
        if unused:
            logger.debug("vLLM engine ignores %s", sorted(unused))
        if top_logprobs < 1:
            raise InputError(f"top_logprobs must be at least 1, got {top_logprobs}")
        spec = resolve_model(model)
        # a hub id that cannot be had (offline and not cached, unknown, hub unreachable): one line
        # saying how to get it, now, not after vLLM's start-up and the hub client's retries
        check_model_available(spec)
        vllm: Any = require("vllm", "vllm", "the vLLM engine")
        self._vllm = vllm
        self.model_name = spec.name
        self.top_logprobs = int(top_logprobs)
        kwargs: dict[str, Any] = {
            "model": spec.location,
            "tensor_parallel_size": int(tensor_parallel_size),
            "enable_prefix_caching": bool(enable_prefix_caching),
            "dtype": dtype,
            "gpu_memory_utilization": gpu_memory_utilization,
            "trust_remote_code": trust_remote_code,
            "max_logprobs": self.top_logprobs,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = int(max_model_len)
        kwargs.update(llm_kwargs or {})
        self.llm_kwargs = kwargs
        self.llm = self._vllm.LLM(**kwargs)
        self.tokenizer = HFTokenizer(self.llm.get_tokenizer())

    def _run(self, prompts: list[list[int]], params: list[Any]) -> list[Any]:
        inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        outs = list(self.llm.generate(inputs, params, use_tqdm=False))
        self.stats.calls += 1
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        return outs

    def logprobs(self, requests: Sequence[LogprobRequest]) -> list[LogprobResult]:
        prompts: list[list[int]] = []
        where: list[tuple[int, int]] = []
        base.check_requests(requests)
        for i, r in enumerate(requests):
            for j in range(len(r.extension) + 1):
                prompts.append(list(r.prompt_ids) + list(r.extension[:j]))
                where.append((i, j))
        params = self._vllm.SamplingParams(
            temperature=0.0, max_tokens=1, logprobs=self.top_logprobs, detokenize=False
        )
        outs = self._run(prompts, [params] * len(prompts))
        steps: list[list[dict[int, float]]] = [[{} for _ in range(len(r.extension) + 1)] for r in requests]
        for (i, j), out in zip(where, outs, strict=True):
            top = out.outputs[0].logprobs[0]
            steps[i][j] = {t: float(top[t].logprob) for t in requests[i].token_ids if t in top}
        return [LogprobResult(steps=s) for s in steps]

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        base.check_requests(requests)
        params = []
        for r in requests:
            params.append(
                self._vllm.SamplingParams(
                    temperature=0.0,
                    max_tokens=int(r.max_new_tokens),
                    stop=list(r.stop) or None,
                    include_stop_str_in_output=True,
                    logprobs=self.top_logprobs if r.logprob_token_ids else None,
                )
            )
        outs = self._run([list(r.prompt_ids) for r in requests], params)
        results = []
        for r, out in zip(requests, outs, strict=True):
            o = out.outputs[0]
            steps = [
                {t: float(top[t].logprob) for t in r.logprob_token_ids if t in top}
                for top in (o.logprobs or [])
            ]
            finish = "length" if o.finish_reason == "length" else "stop"
            self.stats.generated_tokens += len(o.token_ids)
            results.append(
                GenerateResult(
                    token_ids=list(o.token_ids),
                    text=str(o.text),
                    finish_reason=finish,  # type: ignore[arg-type]
                    step_logprobs=steps if r.logprob_token_ids else [],
                )
            )
        return results
