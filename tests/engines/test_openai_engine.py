"""The OpenAI-compatible engine against real HTTP servers on loopback.

* A real ``python -m llama_cpp.server`` serving the SmolLM2 GGUF (started by the fixture).
* A small real HTTP server (``http.server`` in a thread) that answers 503/429 before succeeding,
  refuses with 400, or counts requests in flight: retries, errors and the concurrency limit.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from erank.engines.base import LogprobRequest
from erank.engines.openai import OpenAIEngine, ServerError
from erank.errors import InputError

from .conftest import DOCS, QUERY


class _Scripted(BaseHTTPRequestHandler):
    state: dict[str, Any] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        st = self.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with st["lock"]:
            st["requests"].append(body)
            st["inflight"] += 1
            st["peak"] = max(st["peak"], st["inflight"])
            failure = st["failures"].pop(0) if st["failures"] else None
        try:
            time.sleep(st.get("delay", 0.0))
            if failure == 400:
                self._send(400, {"error": {"message": "prompt is too long for this model"}})
            elif failure is not None:
                self._send(failure, {"error": "busy"}, {"Retry-After": "0"})
            else:
                top = {"7": -0.1, "3": -2.5, "1": -4.0}
                self._send(
                    200,
                    {
                        "choices": [
                            {
                                "text": "7",
                                "finish_reason": "length",
                                "logprobs": {"tokens": ["7"], "top_logprobs": [top]},
                            }
                        ],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
                    },
                )
        finally:
            with st["lock"]:
                st["inflight"] -= 1


@pytest.fixture
def scripted(tiny_qwen3_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    state: dict[str, Any] = {
        "lock": threading.Lock(),
        "requests": [],
        "inflight": 0,
        "peak": 0,
        "failures": [],
    }
    handler = type("H", (_Scripted,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    server.shutdown()
    server.server_close()


def _engine(url: str, tok: Path, **kw: Any) -> OpenAIEngine:
    return OpenAIEngine("m", base_url=url, tokenizer=str(tok), backoff=0.01, **kw)


def test_retries_on_503_and_429_then_succeeds(scripted, tiny_qwen3_dir: Path) -> None:  # noqa: ANN001
    url, st = scripted
    st["failures"] = [503, 429, 502]
    e = _engine(url, tiny_qwen3_dir, concurrency=1)
    seven = e.tokenizer.encode("7")[0]
    res = e.logprobs([LogprobRequest([1, 2, 3], [seven])])
    assert res[0].steps[0] == {seven: pytest.approx(-0.1)}
    assert len(st["requests"]) == 4
    req = st["requests"][-1]
    assert (
        req["max_tokens"] == 1 and req["temperature"] == 0.0 and req["logprobs"] == 20 and req["model"] == "m"
    )


def test_gives_up_after_max_retries_with_a_clear_error(scripted, tiny_qwen3_dir: Path) -> None:  # noqa: ANN001
    url, st = scripted
    st["failures"] = [500] * 10
    e = _engine(url, tiny_qwen3_dir, concurrency=1, max_retries=2)
    with pytest.raises(ServerError, match="500 after 3 attempts"):
        e.logprobs([LogprobRequest([1, 2, 3], [5])])


def test_client_errors_are_not_retried(scripted, tiny_qwen3_dir: Path) -> None:  # noqa: ANN001
    url, st = scripted
    st["failures"] = [400]
    e = _engine(url, tiny_qwen3_dir)
    with pytest.raises(InputError, match="too long"):
        e.logprobs([LogprobRequest([1, 2, 3], [5])])
    assert len(st["requests"]) == 1


def test_concurrency_is_limited(scripted, tiny_qwen3_dir: Path) -> None:  # noqa: ANN001
    url, st = scripted
    st["delay"] = 0.05
    e = _engine(url, tiny_qwen3_dir, concurrency=3)
    e.logprobs([LogprobRequest([1, 2, i], [5]) for i in range(12)])
    assert len(st["requests"]) == 12
    assert 2 <= st["peak"] <= 3


def test_missing_base_url_is_an_input_error(tiny_qwen3_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERANK_OPENAI_BASE_URL", raising=False)
    with pytest.raises(InputError, match="base_url"):
        OpenAIEngine("m", tokenizer=str(tiny_qwen3_dir))


@pytest.mark.slow
def test_real_llama_cpp_server_direct_and_reasoning(
    llama_server: str, smollm2_dir: Path, llamacpp_default
) -> None:  # noqa: ANN001
    from erank import Reranker

    r = Reranker(
        "smollm2",
        engine="openai",
        mode="direct",
        engine_kwargs={"base_url": llama_server, "tokenizer": str(smollm2_dir)},
    )
    res = r.score(QUERY, DOCS[:1])
    ref = Reranker(engine=llamacpp_default, mode="direct").score(QUERY, DOCS[:1])
    # same llama.cpp kernels, different decode-batch splits: 0.1 nats (see test_equivalence.py)
    for a, b in zip(res.scores, ref.scores, strict=True):
        assert a.label == b.label
        assert abs(math.log(a.probability) - math.log(b.probability)) < 0.1
    g = Reranker("smollm2", engine=r.engine, mode="reasoning", max_new_tokens=8).score(
        QUERY, DOCS[:1], return_reasoning=True
    )
    assert g.scores[0].generated_tokens > 0 and g.scores[0].output


@pytest.mark.slow
def test_real_server_with_its_own_tokenizer(llama_server: str, smollm2_dir: Path) -> None:
    """No local tokenizer: /extras/tokenize and /extras/detokenize of llama-cpp-python, the chat
    template passed as text; the prompt tokens equal the local tokenizer's."""
    cfg = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    template = cfg.get("chat_template")
    if template is None and (smollm2_dir / "chat_template.jinja").exists():
        template = (smollm2_dir / "chat_template.jinja").read_text()
    e = OpenAIEngine(base_url=llama_server, chat_template=template)
    local = OpenAIEngine(base_url=llama_server, tokenizer=str(smollm2_dir))
    assert e.model_name  # taken from /v1/models
    text = "Paris is the capital of France. 10"
    assert e.tokenizer.encode(text) == local.tokenizer.encode(text)
    assert e.tokenizer.decode(e.tokenizer.encode(text)) == text
    assert e.tokenizer.chat_prompt("hi") == local.tokenizer.chat_prompt("hi")
