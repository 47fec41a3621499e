"""LangChain and LlamaIndex rerankers over small in-memory retrieval pipelines, with the real
default model (SmolLM2-135M) through the real transformers engine.

The 135M model is too weak for "the relevant document wins" to be a stable assertion, so the
tests check what a user relies on: the scores are erank's own (the same numbers ``Reranker.score``
gives), the order is by score, ``top_n`` is kept, metadata survives, inputs are not modified, and
the classes plug into the frameworks' own pipelines (``ContextualCompressionRetriever``,
``VectorStoreIndex`` retriever + postprocessor).
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from erank import Reranker  # noqa: E402
from erank.errors import InputError  # noqa: E402

QUERY = "What is the capital of France?"
TEXTS = [
    "Paris is the capital of France.",
    "Bananas are a yellow fruit.",
    "Berlin is the capital of Germany.",
    "The Eiffel Tower is in Paris.",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reranker() -> Reranker:
    return Reranker()


@pytest.fixture(scope="module")
def reference(reranker: Reranker) -> dict[str, float]:
    """erank's own scores for the four texts (one model call per text, done once)."""
    result = reranker.score(QUERY, TEXTS)
    return {t: s.score for t, s in zip(TEXTS, result.scores, strict=True)}


def test_langchain_compressor_alone_and_async(reranker: Reranker, reference: dict[str, float]) -> None:
    from langchain_core.documents import Document

    from erank.integrations import langchain_compressor

    docs = [Document(page_content=t, metadata={"source": f"s{i}"}) for i, t in enumerate(TEXTS)]
    comp = langchain_compressor(reranker, top_n=None)
    out = comp.compress_documents(docs, QUERY)
    assert len(out) == len(TEXTS)
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True)
    for d in out:
        assert d.metadata["relevance_score"] == pytest.approx(reference[d.page_content], abs=1e-6)
        assert d.metadata["source"] == f"s{TEXTS.index(d.page_content)}"  # metadata kept
    assert all("relevance_score" not in d.metadata for d in docs)  # inputs untouched

    comp2 = langchain_compressor(reranker, top_n=2)
    out2 = asyncio.run(comp2.acompress_documents(docs, QUERY))
    assert [d.page_content for d in out2] == [d.page_content for d in out[:2]]
    assert comp2.compress_documents([], QUERY) == []


def test_langchain_contextual_compression_retriever(reranker: Reranker, reference: dict[str, float]) -> None:
    pytest.importorskip(
        "langchain_classic", reason="ContextualCompressionRetriever lives in langchain-classic"
    )
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore

    from erank.integrations.langchain import ERankCompressor

    store = InMemoryVectorStore.from_texts(TEXTS, DeterministicFakeEmbedding(size=16))
    base = store.as_retriever(search_kwargs={"k": 4})
    retriever = ContextualCompressionRetriever(
        base_compressor=ERankCompressor(reranker=reranker, top_n=2), base_retriever=base
    )
    got = retriever.invoke(QUERY)
    best_two = sorted(TEXTS, key=lambda t: -reference[t])[:2]
    assert [d.page_content for d in got] == best_two
    assert [d.metadata["relevance_score"] for d in got] == pytest.approx(
        [reference[t] for t in best_two], abs=1e-6
    )


def test_llamaindex_postprocessor_in_a_vector_index(reranker: Reranker, reference: dict[str, float]) -> None:
    from llama_index.core import VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.schema import QueryBundle, TextNode

    from erank.integrations import llamaindex_postprocessor

    index = VectorStoreIndex([TextNode(text=t) for t in TEXTS], embed_model=MockEmbedding(embed_dim=8))
    retrieved = index.as_retriever(similarity_top_k=4).retrieve(QUERY)
    assert len(retrieved) == 4
    retrieval_scores = {n.node.get_content(): n.score for n in retrieved}
    post = llamaindex_postprocessor(reranker, top_n=3, keep_retrieval_score=True)
    out = post.postprocess_nodes(retrieved, query_bundle=QueryBundle(QUERY))
    best = sorted(TEXTS, key=lambda t: -reference[t])[:3]
    assert [n.node.get_content() for n in out] == best
    for n in out:
        assert n.score == pytest.approx(reference[n.node.get_content()], abs=1e-6)
        assert n.node.metadata["retrieval_score"] == retrieval_scores[n.node.get_content()]


def test_bad_arguments_raise_input_error(reranker: Reranker) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    from erank.integrations.llamaindex import ERankPostprocessor

    post = ERankPostprocessor(reranker=reranker, top_n=1)
    with pytest.raises(InputError, match="needs the query"):
        post.postprocess_nodes([NodeWithScore(node=TextNode(text="x"))])
    assert post.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(InputError, match="top_n"):
        ERankPostprocessor(reranker=reranker, top_n=-1)

    from erank.integrations.langchain import ERankCompressor

    with pytest.raises(InputError, match="top_n"):
        ERankCompressor(reranker=reranker, top_n=-2)
    with pytest.raises(InputError, match="score\\(\\) method"):
        ERankCompressor(reranker="not a reranker")
