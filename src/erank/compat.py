"""Drop-in classes for the official ERank examples: change only the import.

>>> from erank.compat import ERank_Transformer       # doctest: +SKIP
>>> reranker = ERank_Transformer("Alibaba-NLP/ERank-4B")  # doctest: +SKIP
>>> results = reranker.rerank(query, docs, instruction, truncate_length=2048)  # doctest: +SKIP

As in the official code:

* ``rerank`` returns the input dicts themselves, copied with their own keys, values and types
  (an integer ``id`` stays an integer), plus ``"rank_score"``, highest first. A string document
  comes back as ``{"content": text, "rank_score": ...}``.
* ``instruction`` is a name of :func:`erank.prompts.instruction_names` only when it is exactly
  one (``"beir"``, ``"bright/leetcode"``); anything else, one word included, is the instruction
  text itself.
* The mode is the model's default: ``reasoning`` for the published checkpoints (the reference
  behaviour), ``direct`` for the embedded erank-smol, which is trained for it (in reasoning mode
  its outputs seldom parse and every ``rank_score`` would be 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from erank.prompts import InstructionText, instruction_names
from erank.reranker import Reranker
from erank.types import Document, RerankResult

__all__ = ["ERank_Transformer", "ERank_vLLM", "official_instruction"]


def official_instruction(instruction: str | None) -> str | None:
    """``instruction`` as the official code means it: a built-in name only when it is exactly one,
    else free text (:class:`~erank.prompts.InstructionText`)."""
    if instruction is None or not isinstance(instruction, str) or not instruction.strip():
        return instruction
    if instruction.strip() in instruction_names():
        return instruction
    return InstructionText(instruction)


class _Official(Reranker):
    """``rerank`` with the official ERank semantics (see the module docstring)."""

    def _instruction(self, instruction: str | None) -> str | None:
        return official_instruction(instruction)

    def _rows(self, result: RerankResult, docs: Sequence[Any]) -> list[dict[str, Any]]:
        """The input dicts (copies, values and types untouched) plus ``"rank_score"``, best first."""
        out: list[dict[str, Any]] = []
        for index in result.ranking:
            original = docs[index]
            if isinstance(original, Mapping):
                item = dict(original)
            elif isinstance(original, Document):
                item = original.as_dict()
            else:
                item = {"content": original}
            item["rank_score"] = result.scores[index].score
            out.append(item)
        return out


class ERank_Transformer(_Official):  # noqa: N801 - the official name
    """The official ``ERank_Transformer``: the transformers engine, the model's default mode
    (``reasoning`` for the published checkpoints)."""

    def __init__(self, model_name_or_path: str | None, **kwargs: Any) -> None:
        super().__init__(model_name_or_path, engine="transformers", **kwargs)


class ERank_vLLM(_Official):  # noqa: N801 - the official name
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
