"""schemathesis against the server's own OpenAPI schema: a bounded fuzz run, zero 5xx answers."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode


def test_fuzz_no_server_errors(tiny_server: str) -> None:
    schema = schemathesis.openapi.from_url(tiny_server + "/openapi.json")
    failures: list[str] = []
    calls = [0]

    def check(case) -> None:  # noqa: ANN001
        response = case.call(base_url=tiny_server, timeout=60)
        calls[0] += 1
        if response.status_code >= 500:
            where = f"{case.operation.method} {case.operation.path}"
            failures.append(f"{where}: {response.status_code} {response.text[:200]}")

    for result in schema.get_all_operations():
        op = result.ok()
        post = op.method.upper() == "POST"
        # GET endpoints take no input: nothing negative to generate for them.
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if post else (GenerationMode.POSITIVE,)
        for mode in modes:
            run = settings(
                max_examples=10 if post else 2,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )(given(case=op.as_strategy(generation_mode=mode))(check))
            run()
    assert calls[0] >= 50
    assert failures == []
    assert httpx.get(tiny_server + "/health").status_code == 200
    metrics = httpx.get(tiny_server + "/metrics").text
    assert 'erank_errors_total{kind="internal"}' not in metrics
