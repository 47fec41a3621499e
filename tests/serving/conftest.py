"""Real servers on loopback for the serving tests.

``run_server(app)`` starts uvicorn in a thread on a free 127.0.0.1 port and yields its base URL;
the app is erank's real FastAPI app over a real :class:`~erank.Reranker` (the tiny random Qwen3
where the model's quality does not matter, the embedded SmolLM2 in the ``slow`` tests).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from erank import Reranker
from erank.serving import ServeSettings, create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def run_server(app: Any, timeout: float = 60.0, wait_ready: bool = True) -> Iterator[str]:
    """uvicorn on a free loopback port in a thread; yields ``http://127.0.0.1:PORT``; stops gracefully."""
    from erank.serving.server import build_server

    port = free_port()
    # erank serve's own server: the connection limit, the idle deadline and the drain
    server = build_server(app, host="127.0.0.1", port=port, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.started:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + ("/ready" if wait_ready else "/health"), timeout=5).status_code == 200:
                    break
        time.sleep(0.05)
    else:
        server.should_exit = True
        raise RuntimeError("the test server did not become ready")
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def tiny_reranker(tiny_qwen3_dir: Path) -> Reranker:
    return Reranker(str(tiny_qwen3_dir), mode="direct")


def tiny_app(tiny_qwen3_dir: Path, **settings: Any) -> Any:
    """A fresh app (own queue, own metrics) over its own tiny reranker."""
    return create_app(ServeSettings(**settings), reranker=Reranker(str(tiny_qwen3_dir), mode="direct"))


@pytest.fixture(scope="module")
def tiny_server(tiny_qwen3_dir: Path) -> Iterator[str]:
    """The tiny model behind default limits, except a 12 MB body limit (the 10 MB document fits)."""
    with run_server(tiny_app(tiny_qwen3_dir, max_body_bytes=12 * 1024 * 1024)) as base:
        yield base


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in a Prometheus text exposition (0.0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in (labels or {}).items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0
