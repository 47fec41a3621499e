"""Fixtures of the engine tests: the real default model through each engine, a real llama.cpp server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

#: One query and documents whose ERank scores are well apart on the default model (checked for
#: every engine in test_equivalence.py).
QUERY = "what is the capital of france"
DOCS = [
    "Paris is the capital and largest city of France.",
    "Bananas are yellow fruit.",
    "France is a country in Europe; its capital is Paris, on the Seine.",
    "The Eiffel tower.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def llama_server(smollm2_gguf: Path) -> Iterator[str]:
    """A real ``python -m llama_cpp.server`` on loopback serving the SmolLM2 GGUF; yields ``/v1`` URL."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", "2048", "--verbose", "false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the llama.cpp server exited with {proc.returncode}")
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the llama.cpp server did not start within 180 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def tf_default(smollm2_dir: Path):  # noqa: ANN201
    from erank.engines.transformers import TransformersEngine

    return TransformersEngine(str(smollm2_dir), device="cpu")


@pytest.fixture(scope="session")
def llamacpp_default():  # noqa: ANN201
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from erank.engines.llamacpp import LlamaCppEngine, check_llama_cpp
    from erank.models import default_gguf_path

    problem = check_llama_cpp(default_gguf_path())
    if problem is not None:  # a crashing build must never take the test process down with it
        pytest.fail(f"llama-cpp-python cannot decode the default GGUF here: {problem}")
    engine = LlamaCppEngine("smollm2-135m", n_ctx=2048)
    yield engine
    engine.close()
