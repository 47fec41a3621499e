"""Drop-in classes for the official ERank examples: change only the import.

>>> from erank.compat import ERank_Transformer       # doctest: +SKIP
>>> reranker = ERank_Transformer("Alibaba-NLP/ERank-4B")  # doctest: +SKIP
>>> results = reranker.rerank(query, docs, instruction, truncate_length=2048)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from erank.reranker import Reranker

__all__ = ["ERank_Transformer", "ERank_vLLM"]


class ERank_Transformer(Reranker):  # noqa: N801 - the official name
    """The official ``ERank_Transformer``: transformers engine, ``reasoning`` mode by default."""

    def __init__(self, model_name_or_path: str, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reasoning")
        super().__init__(model_name_or_path, engine="transformers", **kwargs)


class ERank_vLLM(Reranker):  # noqa: N801 - the official name
    """The official ``ERank_vLLM``: the vLLM engine (prefix caching on), ``reasoning`` mode, greedy,
    up to 4096 new tokens. Engine arguments (``tensor_parallel_size``, ``gpu_memory_utilization``,
    ``max_model_len``, ``dtype``...) may be passed directly. vLLM is imported only here, when the
    class is instantiated; ``import erank`` never imports it.

    >>> from erank.compat import ERank_vLLM                              # doctest: +SKIP
    >>> reranker = ERank_vLLM("Alibaba-NLP/ERank-4B", tensor_parallel_size=1)  # doctest: +SKIP
    >>> results = reranker.rerank(query, docs, instruction, truncate_length=2048)  # doctest: +SKIP
    """

    _ENGINE_ARGS = (
        "tensor_parallel_size",
        "enable_prefix_caching",
        "top_logprobs",
        "gpu_memory_utilization",
        "max_model_len",
        "trust_remote_code",
        "llm_kwargs",
    )

    def __init__(self, model_name_or_path: str, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reasoning")
        engine_kwargs = dict(kwargs.pop("engine_kwargs", None) or {})
        for key in self._ENGINE_ARGS:
            if key in kwargs:
                engine_kwargs[key] = kwargs.pop(key)
        super().__init__(model_name_or_path, engine="vllm", engine_kwargs=engine_kwargs, **kwargs)
