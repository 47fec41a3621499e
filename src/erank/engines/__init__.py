"""Engines: what runs the model. One module per engine, created by name through :func:`create_engine`.

Engines are imported lazily so that an optional dependency (vLLM, llama.cpp, httpx) is only
needed by the engine that uses it.
"""

from __future__ import annotations

import importlib
from typing import Any

from erank.engines.base import (
    Engine,
    GenerateRequest,
    GenerateResult,
    LogprobRequest,
    LogprobResult,
    Tokenizer,
)
from erank.engines.tokenizers import HFTokenizer, token_id_list, trim_tokens_to_text
from erank.errors import InputError

__all__ = [
    "ENGINES",
    "Engine",
    "GenerateRequest",
    "GenerateResult",
    "HFTokenizer",
    "LogprobRequest",
    "LogprobResult",
    "Tokenizer",
    "cpu_has_bf16",
    "create_engine",
    "token_id_list",
    "trim_tokens_to_text",
]

#: name -> "module:Class"
ENGINES: dict[str, str] = {
    "transformers": "erank.engines.transformers:TransformersEngine",
    "llamacpp": "erank.engines.llamacpp:LlamaCppEngine",
    "vllm": "erank.engines.vllm:VLLMEngine",
    "openai": "erank.engines.openai:OpenAIEngine",
}


def create_engine(name: str, model: Any = None, **kwargs: Any) -> Engine:
    """Create the engine ``name`` (see :data:`ENGINES`) for ``model``."""
    if name not in ENGINES:
        raise InputError(f"unknown engine {name!r}; available: {', '.join(sorted(ENGINES))}")
    module, cls = ENGINES[name].split(":")
    engine_cls = getattr(importlib.import_module(module), cls)
    engine: Engine = engine_cls(model, **kwargs)
    return engine


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 matrix units (avx512_bf16 or AMX), so bf16 matmuls pay
    (:mod:`erank.engines.precision`, imported here on first use: it needs torch)."""
    from erank.engines import precision

    return precision.cpu_has_bf16()
