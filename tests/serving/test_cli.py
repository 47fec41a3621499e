"""``erank serve`` options and ``ERANK_*`` environment variables."""

from __future__ import annotations

import pytest

from erank.cli import build_parser, main
from erank.errors import InputError
from erank.serving.cli import settings_from_args
from erank.serving.settings import ServeSettings


def test_command_line_overrides_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERANK_MAX_QUEUE", "9")
    monkeypatch.setenv("ERANK_MAX_DOCUMENTS", "7")
    monkeypatch.setenv("ERANK_CROSS_BATCHING", "false")
    monkeypatch.setenv("ERANK_MAX_WAIT_MS", "2.5")
    args = build_parser().parse_args(["serve", "--mode", "direct", "--max-queue", "5", "--port", "9123"])
    s = settings_from_args(args)
    assert (s.max_queue, s.max_documents, s.cross_batching, s.max_wait_ms) == (5, 7, False, 2.5)
    # --truncate-length's default, as in every command
    assert (s.mode, s.port, s.host, s.max_tokens_per_doc) == ("direct", 9123, "127.0.0.1", 2048)


def test_bad_settings_name_what_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="ERANK_MAX_QUEUE='lots' is not a valid int"):
        ServeSettings.from_env({"ERANK_MAX_QUEUE": "lots"})
    with pytest.raises(InputError, match="max_documents must be a positive integer"):
        ServeSettings(max_documents=0)
    monkeypatch.setenv("ERANK_PORT", "70000")
    with pytest.raises(InputError, match="port must be within"):
        settings_from_args(build_parser().parse_args(["serve"]))


def test_serve_with_a_missing_model_exits_2_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", "/nonexistent/model.gguf", "--port", "9"]) == 2
    assert "does not exist" in capsys.readouterr().err
