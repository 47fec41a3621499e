"""Drop-in classes for the official ERank examples: change only the import.

>>> from erank.compat import ERank_Transformer       # doctest: +SKIP
>>> reranker = ERank_Transformer("Alibaba-NLP/ERank-4B")  # doctest: +SKIP
>>> results = reranker.rerank(query, docs, instruction, truncate_length=2048)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from erank.reranker import Reranker

__all__ = ["ERank_Transformer"]


class ERank_Transformer(Reranker):  # noqa: N801 - the official name
    """The official ``ERank_Transformer``: transformers engine, ``reasoning`` mode by default."""

    def __init__(self, model_name_or_path: str, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reasoning")
        super().__init__(model_name_or_path, engine="transformers", **kwargs)
