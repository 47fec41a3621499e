"""LlamaIndex: :class:`ERankPostprocessor`, a node postprocessor that reranks with erank.

>>> from llama_index.core.schema import NodeWithScore, TextNode                     # doctest: +SKIP
>>> from erank import Reranker                                                      # doctest: +SKIP
>>> from erank.integrations.llamaindex import ERankPostprocessor                   # doctest: +SKIP
>>> post = ERankPostprocessor(reranker=Reranker(), top_n=1)                         # doctest: +SKIP
>>> nodes = [NodeWithScore(node=TextNode(text="Bananas are yellow.")),
...          NodeWithScore(node=TextNode(text="Paris is the capital of France."))]  # doctest: +SKIP
>>> [n.node.get_content() for n in post.postprocess_nodes(nodes, query_str="capital of France")]  # doctest: +SKIP
['Paris is the capital of France.']
"""

from __future__ import annotations

from typing import Any

from erank.errors import InputError, require
from erank.integrations import check_settings

require("llama_index.core", "llamaindex", "the LlamaIndex integration")

from llama_index.core.bridge.pydantic import Field  # noqa: E402
from llama_index.core.callbacks import CBEventType, EventPayload  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle  # noqa: E402

__all__ = ["ERankPostprocessor"]


class ERankPostprocessor(BaseNodePostprocessor):
    """Rerank retrieved nodes with an erank ``Reranker``: sets ``NodeWithScore.score``, keeps ``top_n``.

    ``keep_retrieval_score=True`` stores the retriever's score in ``node.metadata["retrieval_score"]``.
    The text scored is ``node.get_content(metadata_mode=MetadataMode.EMBED)``, as LlamaIndex's own
    rerankers do.
    """

    reranker: Any = Field(description="an erank Reranker (or anything with its score() method)")
    top_n: int | None = Field(default=3, description="nodes to keep, best first; None keeps all")
    instruction: str | None = Field(default=None, description="erank task instruction (name or text)")
    truncate_length: int | None = Field(default=2048, description="tokens kept of query and each node")
    keep_retrieval_score: bool = Field(default=False, description="keep the retrieval score in metadata")

    def __init__(self, **data: Any) -> None:
        check_settings(data)
        super().__init__(**data)

    @classmethod
    def class_name(cls) -> str:
        return "ERankPostprocessor"

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise InputError("ERankPostprocessor needs the query: pass query_bundle or query_str")
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: getattr(self.reranker, "model_name", "erank"),
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            result = self.reranker.score(
                query_bundle.query_str, texts, self.instruction, self.truncate_length
            )
            for node, sc in zip(nodes, result.scores, strict=True):
                if self.keep_retrieval_score:
                    node.node.metadata["retrieval_score"] = node.score
                node.score = float(sc.score)
            keep = result.ranking if self.top_n is None else result.ranking[: self.top_n]
            new_nodes = [nodes[i] for i in keep]
            event.on_end(payload={EventPayload.NODES: new_nodes})
        return new_nodes
