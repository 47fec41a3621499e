"""LangChain: :class:`ERankCompressor`, a document compressor that reranks with erank.

Use it alone (``compress_documents``) or inside a ``ContextualCompressionRetriever`` (in
``langchain_classic.retrievers`` for LangChain 1.x, ``langchain.retrievers`` before).

>>> from langchain_core.documents import Document                                   # doctest: +SKIP
>>> from erank import Reranker                                                      # doctest: +SKIP
>>> from erank.integrations.langchain import ERankCompressor                       # doctest: +SKIP
>>> compressor = ERankCompressor(reranker=Reranker(), top_n=1)                      # doctest: +SKIP
>>> docs = [Document(page_content="Bananas are yellow."),
...         Document(page_content="Paris is the capital of France.")]              # doctest: +SKIP
>>> [d.page_content for d in compressor.compress_documents(docs, "capital of France")]  # doctest: +SKIP
['Paris is the capital of France.']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from erank.errors import require
from erank.integrations import check_settings

require("langchain_core", "langchain", "the LangChain integration")

from langchain_core.callbacks import Callbacks  # noqa: E402
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from pydantic import ConfigDict  # noqa: E402

__all__ = ["ERankCompressor"]


class ERankCompressor(BaseDocumentCompressor):
    """Rerank LangChain documents with an erank ``Reranker`` and keep the ``top_n`` best.

    Each returned document is a copy with ``metadata[score_key]`` (default ``"relevance_score"``)
    set to erank's ``rank_score``; the input documents are not modified. ``top_n=None`` keeps all.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    reranker: Any
    top_n: int | None = 3
    instruction: str | None = None
    truncate_length: int | None = 2048
    score_key: str = "relevance_score"

    def __init__(self, **data: Any) -> None:
        check_settings(data)
        super().__init__(**data)

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Score ``documents`` for ``query``; return the ``top_n`` best, most relevant first."""
        docs = list(documents)
        if not docs:
            return []
        result = self.reranker.score(
            query, [d.page_content for d in docs], self.instruction, self.truncate_length
        )
        keep = result.ranking if self.top_n is None else result.ranking[: self.top_n]
        out = []
        for i in keep:
            d = docs[i]
            metadata = {**d.metadata, self.score_key: float(result.scores[i].score)}
            out.append(d.model_copy(update={"metadata": metadata}))
        return out
