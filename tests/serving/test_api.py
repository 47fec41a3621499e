"""The endpoints' shapes and the bad-input answers, against a real server on loopback (tiny model)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time

import httpx
import pytest
from tests.serving.conftest import metric_value, run_server

from erank.serving import ServeSettings, create_app

DOCS = ["Rust is a systems programming language.", "Bread is baked from flour.", "Cargo builds Rust code."]


@pytest.fixture(scope="module")
def client(tiny_server: str):  # noqa: ANN201
    with httpx.Client(base_url=tiny_server, timeout=60) as c:
        yield c


def test_operations_endpoints(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == ready.json()["model"]


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_cohere_shape(client: httpx.Client, path: str, tiny_reranker) -> None:  # noqa: ANN001
    r = client.post(
        path, json={"model": "erank", "query": "what is rust", "documents": DOCS, "return_documents": True}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    scores = [x["relevance_score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert sorted(x["index"] for x in body["results"]) == [0, 1, 2]
    assert all(x["document"]["text"] == DOCS[x["index"]] for x in body["results"])
    assert body["meta"]["billed_units"]["search_units"] == 1 and body["usage"]["total_tokens"] > 0
    # The same order and scores (rank_score / 10) as the Python API on the same model.
    direct = tiny_reranker.score("what is rust", DOCS)
    assert [x["index"] for x in body["results"]] == direct.ranking
    assert scores == pytest.approx([direct.scores[i].score / 10 for i in direct.ranking], rel=1e-4, abs=1e-7)


def test_cohere_top_n_and_objects(client: httpx.Client) -> None:
    docs = [{"text": d, "id": f"d{i}"} for i, d in enumerate(DOCS)]
    body = client.post(
        "/v1/rerank", json={"query": "rust", "documents": docs, "top_n": 2, "return_documents": True}
    ).json()
    assert len(body["results"]) == 2
    assert all(x["document"]["id"] == f"d{x['index']}" for x in body["results"])  # objects come back whole
    # Without return_documents there is no document; a top_n beyond the list is clamped and reported.
    body = client.post("/v2/rerank", json={"query": "rust", "documents": DOCS, "top_n": 10}).json()
    assert len(body["results"]) == 3 and "document" not in body["results"][0]
    assert "top_n=10" in body["meta"]["warnings"][0]


def test_rank_fields(client: httpx.Client) -> None:
    docs = [{"title": "Rust", "body": "a language"}, {"title": "Bread", "body": "food"}]
    r = client.post("/v1/rerank", json={"query": "rust", "documents": docs, "rank_fields": ["title", "body"]})
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    r = client.post("/v1/rerank", json={"query": "rust", "documents": docs, "rank_fields": ["author"]})
    assert r.status_code == 422 and "documents[0]" in r.json()["message"] and "author" in r.json()["message"]


def test_tei_shape(client: httpx.Client) -> None:
    raw = client.post(
        "/rerank", json={"query": "what is rust", "texts": DOCS, "raw_scores": True, "return_text": True}
    )
    assert raw.status_code == 200
    rows = raw.json()
    assert isinstance(rows, list) and [r["text"] for r in rows] == [DOCS[r["index"]] for r in rows]
    scaled = client.post("/rerank", json={"query": "what is rust", "texts": DOCS}).json()
    assert [r["index"] for r in scaled] == [r["index"] for r in rows] and "text" not in scaled[0]
    assert [r["score"] * 10 for r in scaled] == pytest.approx([r["score"] for r in rows], rel=1e-4, abs=1e-7)


def test_score_endpoint(client: httpx.Client) -> None:
    body = client.post(
        "/score", json={"query": "what is rust", "documents": DOCS, "instruction": "msmarco"}
    ).json()
    assert body["mode"] == "direct" and body["method"] == "erank" and len(body["ranking"]) == 3
    for row in body["results"]:
        assert len(row["distribution"]) == 11 and sum(row["distribution"]) <= 1.0 + 1e-6
        assert row["probability"] == pytest.approx(row["distribution"][row["label"]])
        assert row["score"] == pytest.approx(row["label"] * row["probability"])
        assert row["parsed"] is True and row["truncated"] is False and row["prompt_tokens"] > 0
    assert [r["index"] for r in body["results"]] == body["ranking"]
    assert body["usage"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in body["results"])


def test_ten_megabyte_document_is_truncated_and_reported(client: httpx.Client) -> None:
    big = "relevant words " * (10 * 1024 * 1024 // 15)
    r = client.post(
        "/v1/rerank", json={"query": "rust", "documents": [big, "short"], "max_tokens_per_doc": 64}
    )
    assert r.status_code == 200, r.text[:300]
    assert "documents [0] were truncated to 64 tokens" in r.json()["meta"]["warnings"][0]
    s = client.post(
        "/score", json={"query": "rust", "documents": [big, "short"], "return_documents": False}
    ).json()
    by_index = {row["index"]: row for row in s["results"]}
    assert by_index[0]["truncated"] is True and by_index[1]["truncated"] is False
    assert s["usage"]["truncated_documents"] == 1


BAD = [
    # (description, raw body or json, status, text the message must contain)
    ("empty list", {"query": "q", "documents": []}, 422, "documents is empty"),
    ("empty query", {"query": "  ", "documents": ["a"]}, 422, "query is empty"),
    ("missing query", {"documents": ["a"]}, 422, "query: Field required"),
    ("empty string doc", {"query": "q", "documents": ["a", ""]}, 422, "documents[1] is empty"),
    ("number doc", {"query": "q", "documents": ["a", 5]}, 422, "documents.1"),
    (
        "object without text",
        {"query": "q", "documents": [{"title": "x"}]},
        422,
        "documents[0] is an object without",
    ),
    (
        "query not a string",
        {"query": ["q"], "documents": ["a"]},
        422,
        "query: Input should be a valid string",
    ),
    ("documents not a list", {"query": "q", "documents": "abc"}, 422, "documents"),
    ("top_n 0", {"query": "q", "documents": ["a"], "top_n": 0}, 422, "top_n"),
    ("top_n negative", {"query": "q", "documents": ["a"], "top_n": -3}, 422, "top_n"),
    ("top_n a word", {"query": "q", "documents": ["a"], "top_n": "many"}, 422, "top_n"),
    (
        "max_tokens_per_doc 0",
        {"query": "q", "documents": ["a"], "max_tokens_per_doc": 0},
        422,
        "max_tokens_per_doc",
    ),
    ("10000 documents", {"query": "q", "documents": ["doc"] * 10000}, 413, "the limit is 1000"),
    ("unpaired surrogate", b'{"query": "q", "documents": ["\\ud800"]}', 422, "not valid Unicode"),
    ("invalid UTF-8", b'{"query": "q", "documents": ["\xff\xfe"]}', 400, "not valid UTF-8"),
    ("invalid JSON", b'{"query": "q", "documents": [', 400, "not valid JSON"),
    ("body not an object", b"[1, 2]", 422, "invalid request"),
    ("no body", b"", 422, "Field required"),
    ("unknown instruction name", None, 422, "unknown instruction name 'not-a-known-name'"),
]


@pytest.mark.parametrize("path", ["/v1/rerank", "/score"])
@pytest.mark.parametrize(("what", "body", "status", "needle"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_clear_4xx(
    client: httpx.Client, path: str, what: str, body, status: int, needle: str
) -> None:  # noqa: ANN001
    if body is None:
        body = {"query": "q", "documents": ["a"], "instruction": "not-a-known-name"}
    if isinstance(body, bytes):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == status, (what, r.status_code, r.text[:300])
    assert needle in r.json()["message"], r.json()


def test_tei_bad_input(client: httpx.Client) -> None:
    r = client.post("/rerank", json={"query": "q", "texts": []})
    assert r.status_code == 422 and r.json()["error"] == "documents is empty; send at least one document"
    r = client.post("/rerank", json={"query": "q", "texts": ["a", None]})
    assert r.status_code == 422 and "texts.1" in r.json()["error"]


def test_nul_bytes_are_scored(client: httpx.Client) -> None:
    r = client.post("/v1/rerank", json={"query": "q\x00", "documents": ["a\x00b", "\x00c"]})
    assert r.status_code == 200 and len(r.json()["results"]) == 2


def test_too_large_body_is_413(client: httpx.Client) -> None:
    payload = json.dumps({"query": "q", "documents": ["x" * (13 * 1024 * 1024)]}).encode()
    r = client.post("/v1/rerank", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["message"]

    def chunks():  # noqa: ANN202 - no Content-Length: the limit is enforced while reading
        for i in range(0, len(payload), 1 << 20):
            yield payload[i : i + (1 << 20)]

    r = client.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_server_healthy_after_bad_input_and_metrics_count_it(client: httpx.Client) -> None:
    with cf.ThreadPoolExecutor(4) as ex:
        bad = list(
            ex.map(
                lambda _: client.post("/v1/rerank", json={"query": "q", "documents": []}).status_code,
                range(4),
            )
        )
    assert bad == [422] * 4
    ok = client.post("/v1/rerank", json={"query": "rust", "documents": DOCS})
    assert ok.status_code == 200 and client.get("/health").status_code == 200
    text = client.get("/metrics").text
    assert metric_value(text, "erank_requests_total", {"endpoint": "/v1/rerank", "status": "422"}) >= 4
    assert metric_value(text, "erank_errors_total", {"kind": "too_many_documents"}) >= 1
    assert metric_value(text, "erank_documents_total", {"endpoint": "/v1/rerank"}) >= 3
    assert metric_value(text, "erank_prompt_tokens_total") > 0
    assert metric_value(text, "erank_batch_pairs_count") >= 1
    assert metric_value(text, "erank_request_latency_seconds_count", {"endpoint": "/v1/rerank"}) >= 5
    assert "erank_queue_depth 0.0" in text
    assert metric_value(text, "erank_requests_total", {"endpoint": "/v1/rerank", "status": "500"}) == 0


def test_model_that_fails_to_load_is_reported_by_ready_not_hidden() -> None:
    """create_app without a reranker loads the model in the background; a failure shows in /ready."""
    app = create_app(ServeSettings(model="/nonexistent/model.gguf"))
    with run_server(app, wait_ready=False) as base:
        assert httpx.get(base + "/health").status_code == 200
        for _ in range(100):
            ready = httpx.get(base + "/ready")
            if ready.json()["status"] != "loading":
                break
            time.sleep(0.05)
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        assert "does not exist" in ready.json()["error"]
        r = httpx.post(base + "/v1/rerank", json={"query": "q", "documents": ["a"]})
        assert r.status_code == 503 and "failed to load" in r.json()["message"]
