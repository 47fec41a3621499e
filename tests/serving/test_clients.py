"""The official cohere SDK (v1 and v2 clients) pointed at the server with ``base_url``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cohere
import httpx
import pytest
from tests.serving.conftest import run_server

from erank import Reranker
from erank.serving import ServeSettings, create_app

DOCS = [
    "Rust is a systems programming language focused on safety.",
    "Bread is baked from flour, water and yeast.",
    "Cargo is the package manager of the Rust language.",
]
QUERY = "what is the rust programming language"


def test_cohere_sdk_against_tiny_model(tiny_server: str, tiny_reranker) -> None:  # noqa: ANN001
    expected = tiny_reranker.score(QUERY, DOCS).ranking
    v1 = cohere.Client(api_key="unused", base_url=tiny_server)
    res = v1.rerank(query=QUERY, documents=DOCS, top_n=3, return_documents=True)
    assert [r.index for r in res.results] == expected
    assert [r.document.text for r in res.results] == [DOCS[i] for i in expected]
    v2 = cohere.ClientV2(api_key="unused", base_url=tiny_server)
    res2 = v2.rerank(model="erank", query=QUERY, documents=DOCS, top_n=2, max_tokens_per_doc=128)
    assert [r.index for r in res2.results] == expected[:2]
    # Errors reach the SDK as its own exception types, with erank's message.
    with pytest.raises(cohere.UnprocessableEntityError) as info:
        v2.rerank(model="erank", query=QUERY, documents=[])
    assert info.value.body["message"] == "documents is empty; send at least one document"


@pytest.fixture(scope="module")
def smollm2_server(smollm2_dir: Path) -> Iterator[tuple[str, Reranker]]:
    reranker = Reranker(str(smollm2_dir), mode="direct")
    # Jina clients send their own model names: this server accepts any (--allow-any-model).
    with run_server(create_app(ServeSettings(allow_any_model=True), reranker=reranker), timeout=180) as base:
        yield base, reranker


@pytest.mark.slow
def test_cohere_sdk_same_order_as_python_api_with_default_model(smollm2_server) -> None:  # noqa: ANN001
    """The embedded SmolLM2 in direct mode: the SDK's order is the Python API's order."""
    base, reranker = smollm2_server
    python_order = [DOCS.index(row["content"]) for row in reranker.rerank(QUERY, DOCS)]
    v1 = cohere.Client(api_key="unused", base_url=base, timeout=300)
    assert [r.index for r in v1.rerank(query=QUERY, documents=DOCS).results] == python_order
    v2 = cohere.ClientV2(api_key="unused", base_url=base, timeout=300)
    res = v2.rerank(model="smollm2-135m", query=QUERY, documents=DOCS)
    assert [r.index for r in res.results] == python_order
    # Jina-style client: plain JSON to /v1/rerank with return_documents.
    jina = httpx.post(
        base + "/v1/rerank",
        json={
            "model": "jina-reranker",
            "query": QUERY,
            "documents": DOCS,
            "top_n": 3,
            "return_documents": True,
        },
        timeout=300,
    ).json()
    assert [r["index"] for r in jina["results"]] == python_order and jina["usage"]["total_tokens"] > 0
    assert [r["document"]["text"] for r in jina["results"]] == [DOCS[i] for i in python_order]
