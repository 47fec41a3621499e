"""schemathesis against the server's own OpenAPI schema, with all of its checks.

A bounded run (positive and negative cases of every operation): zero 5xx and zero check
failures -- answers conform to the documented status codes, content types and bodies, schema-valid
requests are accepted and schema-invalid ones refused. Run once without and once with an API key
(then ``ignored_auth`` checks that a request without the key is refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES
from schemathesis.generation.modes import GenerationMode
from tests.serving.conftest import metric_value, run_server, tiny_app


def _fuzz(base: str, headers: dict[str, str] | None, examples: int) -> tuple[int, list[str], list[int]]:
    # A refusal is expected of schema-invalid data; 413 (more documents than the schema's
    # maxItems) is one, besides schemathesis's default list.
    rejections = [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": rejections}}}
    )
    schema = schemathesis.openapi.from_url(base + "/openapi.json", config=config, headers=headers or {})
    failures: list[str] = []
    statuses: list[int] = []

    def check(case: Any) -> None:
        try:
            response = case.call_and_validate(base_url=base, headers=headers, timeout=60)
            statuses.append(response.status_code)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure (an exception group too) is collected
            where = f"{case.operation.method.upper()} {case.operation.path}"
            failures.append(f"{where}: {str(exc)[:600]}")

    for result in schema.get_all_operations():
        op = result.ok()
        post = op.method.upper() == "POST"
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if post else (GenerationMode.POSITIVE,)
        for mode in modes:
            run = settings(
                max_examples=examples if post else 2,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )(given(case=op.as_strategy(generation_mode=mode))(check))
            run()
    return len(statuses), failures, statuses


def test_fuzz_all_checks_no_server_errors(tiny_server: str) -> None:
    calls, failures, statuses = _fuzz(tiny_server, None, 25)
    assert failures == [], "\n\n".join(failures)
    assert calls >= 100 and not [s for s in statuses if s >= 500]
    assert any(s == 200 for s in statuses) and any(400 <= s < 500 for s in statuses)
    assert httpx.get(tiny_server + "/health").status_code == 200
    metrics = httpx.get(tiny_server + "/metrics").text
    assert metric_value(metrics, "erank_errors_total", {"kind": "internal"}) == 0


@pytest.fixture(scope="module")
def keyed_server(tiny_qwen3_dir: Path):  # noqa: ANN201
    with run_server(tiny_app(tiny_qwen3_dir, api_key="fuzz-key")) as base:
        yield base


def test_fuzz_with_an_api_key(keyed_server: str) -> None:
    assert httpx.get(keyed_server + "/openapi.json").status_code == 401
    calls, failures, statuses = _fuzz(keyed_server, {"Authorization": "Bearer fuzz-key"}, 8)
    assert failures == [], "\n\n".join(failures)
    assert calls >= 30 and not [s for s in statuses if s >= 500]
