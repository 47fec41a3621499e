"""Behaviour under load, against real servers on loopback with the tiny model.

Cross-request batching, a bounded load test with zero failures, overload (429 + Retry-After),
timeouts (504), client disconnects (pending pairs dropped), and SIGTERM with requests in flight
(`erank serve` in a subprocess: they complete and the process exits 0).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.serving.conftest import free_port, metric_value, run_server, tiny_app

WORDS = "rust cargo crate borrow checker lifetime trait generic bread flour oven yeast".split()


def docs(n: int, words: int = 20, seed: int = 0) -> list[str]:
    return [
        " ".join(WORDS[(seed + i * 7 + j) % len(WORDS)] for j in range(words)) + f" {i}" for i in range(n)
    ]


def test_load_concurrent_clients_zero_failures_and_batches_across_requests(tiny_qwen3_dir: Path) -> None:
    """12 concurrent clients, 2 requests of 10 documents each: every request answered 200 in the
    right shape, and pairs of several requests shared model calls (batch-requests mean above 1)."""
    with run_server(tiny_app(tiny_qwen3_dir, max_wait_ms=20)) as base:
        failures: list[str] = []

        def client(k: int) -> int:
            with httpx.Client(base_url=base, timeout=120) as c:
                for i in range(2):
                    r = c.post("/v1/rerank", json={"query": f"rust {k}", "documents": docs(10, seed=k + i)})
                    if r.status_code != 200 or sorted(x["index"] for x in r.json()["results"]) != list(
                        range(10)
                    ):
                        failures.append(f"{r.status_code} {r.text[:200]}")
            return 2

        with cf.ThreadPoolExecutor(12) as ex:
            sent = sum(ex.map(client, range(12)))
        text = httpx.get(base + "/metrics").text
    assert failures == [] and sent == 24
    calls = metric_value(text, "erank_batch_requests_count")
    requests_batched = metric_value(text, "erank_batch_requests_sum")
    assert requests_batched / calls > 1.0, (requests_batched, calls)  # requests really shared calls
    assert metric_value(text, "erank_batch_pairs_sum") == 10 * sent
    assert metric_value(text, "erank_requests_total", {"endpoint": "/v1/rerank", "status": "200"}) == sent


def test_batched_scores_equal_alone(tiny_qwen3_dir: Path, tiny_reranker) -> None:  # noqa: ANN001
    """Scores do not depend on which other requests shared the model call."""
    with run_server(tiny_app(tiny_qwen3_dir, max_wait_ms=50)) as base:
        queries = [f"query {k} rust" for k in range(4)]
        with cf.ThreadPoolExecutor(4) as ex:
            rows = list(
                ex.map(
                    lambda q: httpx.post(
                        base + "/score", json={"query": q, "documents": docs(4)}, timeout=60
                    ).json(),
                    queries,
                )
            )
    for q, body in zip(queries, rows, strict=True):
        alone = tiny_reranker.score(q, docs(4))
        assert body["ranking"] == alone.ranking
        got = {r["index"]: r["score"] for r in body["results"]}
        assert [got[i] for i in range(4)] == pytest.approx(
            [s.score for s in alone.scores], rel=1e-3, abs=1e-6
        )


# The tests below hold pairs in the queue with a long batching window (max_wait_ms) instead of
# relying on the model being slow: what they check does not depend on this machine's speed.


def test_overload_gets_429_and_the_server_stays_healthy(tiny_qwen3_dir: Path) -> None:
    app = tiny_app(tiny_qwen3_dir, max_queue=2, retry_after_s=3, max_wait_ms=2000, max_batch_pairs=10_000)
    with run_server(app) as base:
        body = {"query": "rust", "documents": docs(5)}

        def post(_: int) -> httpx.Response:
            return httpx.post(base + "/v1/rerank", json=body, timeout=120)

        with cf.ThreadPoolExecutor(12) as ex:
            answers = list(ex.map(post, range(12)))
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 429} and codes.count(200) >= 2 and codes.count(429) >= 6, codes
        assert all(r.headers["retry-after"] == "3" for r in answers if r.status_code == 429)
        assert "queue is full" in next(r for r in answers if r.status_code == 429).json()["message"]
        assert httpx.get(base + "/health").status_code == 200
        after = httpx.post(base + "/v1/rerank", json={"query": "rust", "documents": docs(3)}, timeout=60)
        assert after.status_code == 200
        text = httpx.get(base + "/metrics").text
        assert metric_value(text, "erank_errors_total", {"kind": "queue_full"}) == codes.count(429)


def test_timeout_is_504_and_the_pairs_are_dropped(tiny_qwen3_dir: Path) -> None:
    app = tiny_app(tiny_qwen3_dir, request_timeout_s=0.3, max_wait_ms=1500, max_batch_pairs=10_000)
    with run_server(app) as base:
        r = httpx.post(base + "/v1/rerank", json={"query": "rust", "documents": docs(8)}, timeout=60)
        assert r.status_code == 504 and "longer than 0.3 s" in r.json()["message"]
        time.sleep(1.5)  # past the batching window
        text = httpx.get(base + "/metrics").text
        assert metric_value(text, "erank_errors_total", {"kind": "timeout"}) == 1
        assert metric_value(text, "erank_batch_pairs_count") == 0  # the model never saw them
        assert metric_value(text, "erank_queue_depth") == 0
        assert httpx.get(base + "/ready").status_code == 200


def test_client_disconnect_cancels_pending_pairs(tiny_qwen3_dir: Path) -> None:
    with run_server(tiny_app(tiny_qwen3_dir, max_wait_ms=2000, max_batch_pairs=10_000)) as base:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            httpx.post(base + "/v1/rerank", json={"query": "b", "documents": docs(8)}, timeout=0.5)
        time.sleep(2.5)  # past the batching window
        text = httpx.get(base + "/metrics").text
        assert metric_value(text, "erank_errors_total", {"kind": "client_disconnected"}) == 1
        assert metric_value(text, "erank_batch_pairs_count") == 0  # its pairs were never scored
        assert metric_value(text, "erank_queue_depth") == 0
        ok = httpx.post(base + "/v1/rerank", json={"query": "b", "documents": docs(2)}, timeout=60)
        assert ok.status_code == 200


def test_sigterm_finishes_in_flight_requests_and_exits_0(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, ERANK_MAX_DOCUMENTS="100", ERANK_LOG_LEVEL="warning", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "erank.cli", "serve", "--model", str(tiny_qwen3_dir), "--mode", "direct"]
    # a token budget per model call large enough that the four requests below fit one batch, so
    # nothing is dispatched before the 2 s window ends (a full batch is dispatched at once)
    cmd += ["--port", str(port), "--max-wait-ms", "2000", "--max-batch-pairs", "10000"]
    cmd += ["--max-batch-tokens", "1000000"]
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # importing torch and loading take long on a busy machine
        while True:
            try:
                if httpx.get(base + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "erank serve not ready after 300 s"
            time.sleep(0.2)
        # settings from the environment: ERANK_MAX_DOCUMENTS=100
        too_many = httpx.post(base + "/v1/rerank", json={"query": "q", "documents": ["d"] * 101}, timeout=30)
        assert too_many.status_code == 413 and "limit is 100" in too_many.json()["message"]
        body = {"query": "rust", "documents": docs(20)}
        with cf.ThreadPoolExecutor(4) as ex:
            futures = [ex.submit(httpx.post, base + "/v1/rerank", json=body, timeout=120) for _ in range(4)]
            time.sleep(0.5)
            assert not any(f.done() for f in futures), "they wait in the 2 s batching window"
            proc.send_signal(signal.SIGTERM)
            # The drain: /ready answers 503 (it does not refuse the connection) and new rerank
            # requests are turned away, while the admitted ones finish.
            time.sleep(0.3)
            ready = httpx.get(base + "/ready", timeout=10)
            assert ready.status_code == 503 and ready.json()["status"] == "draining"
            late = httpx.post(base + "/v1/rerank", json=body, timeout=10)
            assert late.status_code == 503 and late.json()["error_type"] == "shutting_down"
            answers = [f.result() for f in futures]
        assert [r.status_code for r in answers] == [200] * 4
        assert all(len(r.json()["results"]) == 20 for r in answers)
        assert proc.wait(60) == 0, (tmp_path / "server.log").read_text()
        with pytest.raises(httpx.ConnectError):
            httpx.get(base + "/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
