"""Hostile inputs, API keys, Host checks, slow clients, connection limits, early shedding and a
hostile request next to small ones -- against real servers on loopback (tiny model)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import cohere
import httpx
import pytest
from tests.serving.conftest import metric_value, run_server, tiny_app

from erank.cli import build_parser
from erank.serving.cli import exposure_warnings, settings_from_args
from erank.serving.settings import ServeSettings

DOCS = ["Rust is a systems programming language.", "Bread is baked from flour.", "Cargo builds Rust code."]
SHAPE = {"message", "error", "error_type"}


def _port_of(r: httpx.Response) -> Any:
    return r.extensions["network_stream"].get_extra_info("client_addr")


def _deep(n: int) -> bytes:
    return b'{"query": "q", "documents": ["a"], "x": ' + b"[" * n + b"]" * n + b"}"


HOSTILE: list[tuple[str, str, str, Any, int, str]] = [
    # (what, method, path, body (dict, bytes or None), status, error_type)
    (
        "lone surrogate in instruction",
        "POST",
        "/v1/rerank",
        b'{"query": "q", "documents": ["a"], "instruction": "x \\ud800"}',
        422,
        "invalid_input",
    ),
    (
        "lone surrogate in instruction /score",
        "POST",
        "/score",
        b'{"query": "q", "documents": ["a"], "instruction": "x \\ud800"}',
        422,
        "invalid_input",
    ),
    (
        "lone surrogate in instruction TEI",
        "POST",
        "/rerank",
        b'{"query": "q", "texts": ["a"], "instruction": "x \\ud800"}',
        422,
        "invalid_input",
    ),
    (
        "lone surrogate in a returned field",
        "POST",
        "/v1/rerank",
        b'{"query": "q", "documents": [{"text": "a", "t": "\\udc00"}], "return_documents": true}',
        422,
        "invalid_input",
    ),
    (
        "lone surrogate in a metadata key",
        "POST",
        "/score",
        b'{"query": "q", "documents": [{"text": "a", "m": {"\\ud800": 1}}]}',
        422,
        "invalid_input",
    ),
    (
        "lone surrogate in model",
        "POST",
        "/v2/rerank",
        b'{"model": "\\ud800", "query": "q", "documents": ["a"]}',
        422,
        "invalid_input",
    ),
    (
        "whitespace-only instruction",
        "POST",
        "/v1/rerank",
        {"query": "q", "documents": ["a"], "instruction": " \n "},
        422,
        "invalid_input",
    ),
    (
        "whitespace-only document with rank_fields",
        "POST",
        "/v1/rerank",
        {"query": "q", "documents": [{"title": "  "}], "rank_fields": ["title"]},
        422,
        "invalid_input",
    ),
    (
        "whitespace-only text with rank_fields",
        "POST",
        "/v1/rerank",
        {"query": "q", "documents": [{"text": " ", "title": "x"}], "rank_fields": ["title"]},
        422,
        "invalid_input",
    ),
    (
        "whitespace-only TEI text",
        "POST",
        "/rerank",
        {"query": "q", "texts": ["a", "\t"]},
        422,
        "invalid_input",
    ),
    (
        "max_chunks_per_doc false",
        "POST",
        "/v1/rerank",
        {"query": "q", "documents": ["a"], "max_chunks_per_doc": False},
        422,
        "invalid_input",
    ),
    ("truncate 0", "POST", "/rerank", {"query": "q", "texts": ["a"], "truncate": 0}, 422, "invalid_input"),
    (
        "top_n a string",
        "POST",
        "/v2/rerank",
        {"query": "q", "documents": ["a"], "top_n": "3"},
        422,
        "invalid_input",
    ),
    (
        "return_documents 1",
        "POST",
        "/v2/rerank",
        {"query": "q", "documents": ["a"], "return_documents": 1},
        422,
        "invalid_input",
    ),
    (
        "truncation_direction Left",
        "POST",
        "/rerank",
        {"query": "q", "texts": ["a"], "truncation_direction": "Left"},
        422,
        "invalid_input",
    ),
    (
        "unknown model",
        "POST",
        "/v2/rerank",
        {"model": "rerank-v3.5", "query": "q", "documents": ["a"]},
        404,
        "model_not_found",
    ),
    ("nested 5000 levels", "POST", "/v1/rerank", _deep(5000), 400, "invalid_json"),
    ("unknown path", "GET", "/v1/nothing", None, 404, "not_found"),
    ("wrong method", "GET", "/v1/rerank", None, 405, "method_not_allowed"),
    ("wrong method on /health", "POST", "/health", {}, 405, "method_not_allowed"),
    (
        "too many prompt tokens",
        "POST",
        "/score",
        {"query": "q", "documents": ["word " * 300] * 8},
        413,
        "too_many_tokens",
    ),
]


@pytest.fixture(scope="module")
def hard_server(tiny_qwen3_dir: Path):  # noqa: ANN201
    app = tiny_app(tiny_qwen3_dir, max_request_tokens=2000, max_instruction_tokens=32)
    with run_server(app) as base:
        yield base, app


def test_hostile_inputs_get_documented_4xx_on_one_healthy_connection(hard_server) -> None:  # noqa: ANN001
    """Every hostile input gets its 4xx in the one error shape; the keep-alive connection stays the
    same one throughout, and a normal request after each is answered."""
    base, _ = hard_server
    seen: list[str] = []
    with httpx.Client(base_url=base, timeout=60) as c:
        first = _port_of(c.get("/health"))
        for what, method, path, body, status, kind in HOSTILE:
            if isinstance(body, bytes):
                r = c.request(method, path, content=body, headers={"content-type": "application/json"})
            elif body is None:
                r = c.request(method, path)
            else:
                r = c.request(method, path, json=body)
            assert r.status_code == status, (what, r.status_code, r.text[:300])
            got = r.json()
            assert SHAPE <= set(got) and got["error_type"] == kind and got["message"] == got["error"], (
                what,
                got,
            )
            if status == 405:
                assert r.headers["allow"], what
            ok = c.post("/v1/rerank", json={"query": "rust", "documents": DOCS})
            assert ok.status_code == 200, (what, ok.text[:200])
            assert _port_of(ok) == first, f"the connection was closed after: {what}"
            seen.append(kind)
        text = c.get("/metrics").text
    for kind in set(seen):  # every 4xx counted by kind
        assert metric_value(text, "erank_errors_total", {"kind": kind}) >= seen.count(kind), kind
    assert metric_value(text, "erank_errors_total", {"kind": "internal"}) == 0
    assert metric_value(text, "erank_requests_total", {"endpoint": "other", "status": "404"}) >= 1
    assert 'status="5' not in text


def test_long_instruction_is_cut_and_marked(hard_server) -> None:  # noqa: ANN001
    base, _ = hard_server
    long = "Judge relevance carefully. " * 4000  # about 100 KB
    r = httpx.post(
        base + "/v1/rerank", json={"query": "rust", "documents": DOCS, "instruction": long}, timeout=60
    )
    assert r.status_code == 200
    assert "the instruction was cut to 32 tokens" in " ".join(r.json()["meta"]["warnings"])
    short = httpx.post(
        base + "/v1/rerank", json={"query": "rust", "documents": DOCS, "instruction": "Be brief."}, timeout=60
    )
    # prompt tokens: the cut instruction costs at most 32 tokens more per document than "x"
    assert (
        r.json()["meta"]["billed_units"]["input_tokens"]
        <= short.json()["meta"]["billed_units"]["input_tokens"] + 3 * 32
    )
    tei = httpx.post(base + "/rerank", json={"query": "rust", "texts": DOCS, "instruction": long}, timeout=60)
    assert tei.status_code == 200 and tei.headers["x-erank-instruction-truncated"] == "32"


def test_unexpected_exception_is_a_500_in_shape_and_the_connection_stays(hard_server) -> None:  # noqa: ANN001
    base, app = hard_server
    service = app.service
    original = service.prepare

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    with httpx.Client(base_url=base, timeout=60) as c:
        before = _port_of(c.get("/health"))
        service.prepare = broken
        try:
            r = c.post("/v1/rerank", json={"query": "rust", "documents": DOCS})
        finally:
            service.prepare = original
        assert r.status_code == 500 and r.json() == {
            "message": "internal error: RuntimeError",
            "error": "internal error: RuntimeError",
            "error_type": "internal",
        }
        ok = c.post("/v1/rerank", json={"query": "rust", "documents": DOCS})
        assert ok.status_code == 200 and _port_of(ok) == before  # same connection, still good
        deadline = time.monotonic() + 5  # the slot is given back just after the answer is sent
        while service.admitted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.admitted == 0  # the admission slots were given back, the failed one's too


# ------------------------------------------------------------------------------ API keys and Host
@pytest.fixture(scope="module")
def keyed(tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text("# team keys\nkey-one\n\nkey-two\n")
    with run_server(tiny_app(tiny_qwen3_dir, api_key_file=str(keys))) as base:
        yield base


def test_api_keys_with_the_cohere_sdk(keyed: str) -> None:
    # /health and /ready stay open (for probes); everything else needs a key.
    assert httpx.get(keyed + "/health").status_code == 200 and httpx.get(keyed + "/ready").status_code == 200
    r = httpx.post(keyed + "/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert r.status_code == 401 and r.json()["error_type"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(keyed + "/metrics").status_code == 401
    r = httpx.post(
        keyed + "/v1/rerank", json={"query": "q", "documents": ["a"]}, headers={"Authorization": "Bearer no"}
    )
    assert r.status_code == 403 and r.json()["error_type"] == "forbidden"
    for key in ("key-one", "key-two"):
        res = cohere.ClientV2(api_key=key, base_url=keyed).rerank(model="erank", query="rust", documents=DOCS)
        assert sorted(x.index for x in res.results) == [0, 1, 2]
    with pytest.raises(cohere.ForbiddenError):
        cohere.ClientV2(api_key="wrong", base_url=keyed).rerank(model="erank", query="rust", documents=DOCS)
    # the SDK without a key: its Authorization header is empty
    with pytest.raises(cohere.UnauthorizedError) as info:
        cohere.ClientV2(api_key="", base_url=keyed).rerank(model="erank", query="rust", documents=DOCS)
    assert info.value.body["error_type"] == "unauthorized"
    text = httpx.get(keyed + "/metrics", headers={"Authorization": "Bearer key-one"}).text
    assert metric_value(text, "erank_errors_total", {"kind": "unauthorized"}) >= 3
    assert metric_value(text, "erank_errors_total", {"kind": "forbidden"}) >= 2


def test_keys_from_the_environment_and_warnings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ERANK_API_KEY", "k1,k2")
    s = settings_from_args(build_parser().parse_args(["serve"]))
    assert s.api_keys() == ["k1", "k2"] and s.as_dict()["api_key"] == "***"
    monkeypatch.delenv("ERANK_API_KEY")
    assert any(
        "not a loopback address, without an API key" in w
        for w in exposure_warnings(ServeSettings(host="0.0.0.0"))
    )
    assert exposure_warnings(ServeSettings(host="0.0.0.0", api_key_file=str(_keyfile(tmp_path)))) == []
    assert exposure_warnings(ServeSettings(host="127.0.0.1")) == []
    assert ServeSettings(host="127.0.0.1").host_allow_list() is not None  # on for loopback binds
    assert ServeSettings(host="0.0.0.0").host_allow_list() is None


def _keyfile(tmp_path: Path) -> Path:
    f = tmp_path / "k"
    f.write_text("secret\n")
    return f


def test_host_allow_list_on_loopback(tiny_server: str) -> None:
    port = tiny_server.rsplit(":", 1)[1]
    evil = httpx.get(tiny_server + "/v1/models", headers={"Host": "evil.example"})
    assert evil.status_code == 400 and evil.json()["error_type"] == "invalid_host"
    assert httpx.get(tiny_server + "/v1/models", headers={"Host": f"localhost:{port}"}).status_code == 200
    rebind = httpx.post(
        tiny_server + "/v1/rerank",
        json={"query": "q", "documents": ["a"]},
        headers={"Host": f"evil.example:{port}"},
    )
    assert rebind.status_code == 400


# ------------------------------------------------------------------------------ slow clients
@pytest.fixture(scope="module")
def strict_server(tiny_qwen3_dir: Path):  # noqa: ANN201
    app = tiny_app(tiny_qwen3_dir, body_timeout_s=1.0, idle_timeout_s=1.0, max_connections=4)
    with run_server(app) as base:
        yield base


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _read_all(s: socket.socket) -> bytes:
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk


def test_slow_body_gets_408_and_silent_connections_are_closed(strict_server: str) -> None:
    s = _connect(strict_server)
    started = time.monotonic()
    s.sendall(
        b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"query": '
    )
    answer = _read_all(s)  # the server answers and closes
    took = time.monotonic() - started
    s.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and json.loads(body)["error_type"] == "body_timeout"
    assert took < 5, took
    # Silent after connecting, and trickling a request head: both closed after the idle timeout.
    silent, trickle = _connect(strict_server), _connect(strict_server)
    started = time.monotonic()
    for part in (b"POST /v1/rerank HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n"):
        trickle.sendall(part)
        time.sleep(0.4)
    assert _read_all(trickle) == b"" and _read_all(silent) == b""
    assert time.monotonic() - started < 5
    silent.close()
    trickle.close()
    text = httpx.get(strict_server + "/metrics").text
    assert metric_value(text, "erank_errors_total", {"kind": "body_timeout"}) == 1


def test_connection_limit(strict_server: str) -> None:
    held = [_connect(strict_server) for _ in range(4)]
    try:
        time.sleep(0.2)
        extra = _connect(strict_server)
        extra.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = _read_all(extra)
        extra.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and json.loads(body)["error_type"] == "too_many_connections"
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert httpx.get(strict_server + "/health").status_code == 200


def test_client_leaving_while_sending_is_counted_as_499(strict_server: str) -> None:
    s = _connect(strict_server)
    s.sendall(
        b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"query": '
    )
    time.sleep(0.2)
    s.close()
    time.sleep(0.5)
    text = httpx.get(strict_server + "/metrics").text
    assert metric_value(text, "erank_errors_total", {"kind": "client_disconnected"}) >= 1
    assert metric_value(text, "erank_requests_total", {"endpoint": "/score", "status": "499"}) >= 1


# ------------------------------------------------------------------------------ shedding and stalls
def test_429_is_decided_before_parsing(tiny_qwen3_dir: Path) -> None:
    """With the queue full, even a body that is not JSON gets the 429: nothing was parsed."""
    app = tiny_app(tiny_qwen3_dir, max_queue=1, max_wait_ms=1500, max_batch_pairs=10_000)
    with run_server(app) as base, cf.ThreadPoolExecutor(1) as ex:
        held = ex.submit(httpx.post, base + "/v1/rerank", json={"query": "q", "documents": DOCS}, timeout=60)
        time.sleep(0.5)
        big = b'{"query": "q", "documents": ["' + b"word " * 400_000 + b'"]'  # 2 MB, and broken JSON
        r = httpx.post(
            base + "/v1/rerank", content=big, headers={"content-type": "application/json"}, timeout=60
        )
        assert r.status_code == 429 and r.json()["error_type"] == "queue_full" and r.headers["retry-after"]
        assert held.result().status_code == 200
        text = httpx.get(base + "/metrics").text
        assert (
            metric_value(text, "erank_documents_total", {"endpoint": "/v1/rerank"}) == 3
        )  # only the held one


def test_a_hostile_request_does_not_stall_small_ones(tiny_qwen3_dir: Path) -> None:
    """Small requests from 3 clients, alone and then next to one hostile request (a 100 KB
    instruction, 200 long documents, 80k prompt tokens in all): their median latency stays within
    2x. The hostile request's pairs are scored between theirs, one bounded model call at a time
    (--max-batch-tokens; one pair is at most --max-tokens-per-doc long)."""
    app = tiny_app(tiny_qwen3_dir, max_batch_tokens=1024, max_tokens_per_doc=256, max_instruction_tokens=64)
    small = {"query": "rust language", "documents": [" ".join(["rust cargo crate"] * 20)] * 4}
    hostile = {
        "query": "rust",
        "documents": [f"{i} " + "borrow checker lifetime " * 700 for i in range(200)],
        "instruction": "Judge relevance. " * 6000,
    }

    def clients(base: str, seconds: float) -> list[float]:
        out: list[float] = []
        deadline = time.monotonic() + seconds

        def one(_: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as c:
                while time.monotonic() < deadline:
                    t = time.perf_counter()
                    r = c.post("/v1/rerank", json=small)
                    assert r.status_code == 200, r.text[:200]
                    out.append(time.perf_counter() - t)

        with cf.ThreadPoolExecutor(3) as ex:
            list(ex.map(one, range(3)))
        return out

    with run_server(app) as base:
        clients(base, 1.0)  # warm-up
        alone = clients(base, 3.0)
        done = threading.Event()
        result: list[httpx.Response] = []

        def attack() -> None:
            result.append(httpx.post(base + "/v1/rerank", json=hostile, timeout=120))
            done.set()

        threading.Thread(target=attack, daemon=True).start()
        time.sleep(1.0)  # the hostile request is tokenised and queued
        beside = clients(base, 3.0)
        still_running = not done.is_set()
        done.wait(120)
    ratio = statistics.median(beside) / statistics.median(alone)
    print(
        f"small requests: median alone {statistics.median(alone) * 1000:.1f} ms ({len(alone)}), beside the "
        f"hostile one {statistics.median(beside) * 1000:.1f} ms ({len(beside)}), ratio {ratio:.2f}; "
        f"hostile: {result[0].status_code}, {result[0].json()['meta']['billed_units']['input_tokens']} tokens"
    )
    assert still_running, "the hostile request must still be running while the small ones are measured"
    assert result[0].status_code == 200
    assert ratio <= 2.0, ratio
