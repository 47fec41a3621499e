"""The command line (a real subprocess) and model resolution errors."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from erank import Reranker
from erank.commands.rerank import read_documents
from erank.errors import DataFormatError, InputError, ModelLoadError
from erank.models import resolve_model

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def erank(*args, stdin=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "erank.cli", *args], input=stdin, capture_output=True, timeout=timeout, env=ENV
    )


def test_read_jsonl_and_plain_text(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": "a", "content": "x", "first_stage_score": 2}\n\n{"text": "y"}\n', encoding="utf-8")
    docs = read_documents(str(p))
    assert [d.content for d in docs] == ["x", "y"] and docs[0].id == "a" and docs[0].first_stage_score == 2.0
    t = tmp_path / "d.txt"
    t.write_text("first line\nsecond {line}\n", encoding="utf-8")
    assert [d.content for d in read_documents(str(t))] == ["first line", "second {line}"]


def test_bad_files_name_the_line(tmp_path):
    bad_json = tmp_path / "b.jsonl"
    bad_json.write_text('{"content": "ok"}\n{"content": "broken"\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"line 2: invalid JSON"):
        read_documents(str(bad_json))
    bad_utf8 = tmp_path / "u.jsonl"
    bad_utf8.write_bytes(b'{"content": "ok"}\n{"content": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match=r"line 2: invalid UTF-8"):
        read_documents(str(bad_utf8))
    no_content = tmp_path / "n.jsonl"
    no_content.write_text('{"content": "ok"}\n{"title": "t"}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"line 2: .*without a 'content'"):
        read_documents(str(no_content))
    with pytest.raises(InputError, match="does not exist"):
        read_documents(str(tmp_path / "missing.jsonl"))
    with pytest.raises(InputError, match="is a folder"):
        read_documents(str(tmp_path))


def test_cli_errors_are_one_line_not_a_traceback(tmp_path):
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"content": "x"}\nnot json at all {\n', encoding="utf-8")
    out = erank("rerank", "--query", "q", "--docs", str(bad))
    assert out.returncode == 2
    assert b"line 2: invalid JSON" in out.stderr and b"Traceback" not in out.stderr
    out = erank("rerank", "--query", "q", "--docs", str(tmp_path / "nope.txt"))
    assert out.returncode == 2 and b"does not exist" in out.stderr
    out = erank(
        "rerank", "--query", "q", "--docs", "-", "--model", str(tmp_path / "missing.gguf"), stdin=b"a\n"
    )
    assert out.returncode == 2 and b"does not exist" in out.stderr and b"Traceback" not in out.stderr


def test_cli_help_explains_each_option():
    out = erank("rerank", "--help")
    assert out.returncode == 0
    for opt in [
        b"--query",
        b"--docs",
        b"--instruction",
        b"--model",
        b"--mode",
        b"--top-n",
        b"--truncate-length",
        b"--format",
    ]:
        assert opt in out.stdout


def test_cli_reranks_with_a_local_model_folder(tiny_qwen3_dir, tmp_path):
    docs = tmp_path / "d.jsonl"
    docs.write_text(
        "\n".join(json.dumps({"id": f"d{i}", "content": f"document number {i}"}) for i in range(5))
    )
    out = erank("rerank", "-q", "which document", "--docs", str(docs), "--model", str(tiny_qwen3_dir),
                "--mode", "direct", "--top-n", "3", "--format", "jsonl")  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()
    rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert len(rows) == 3 and [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["rank_score"] for r in rows] == sorted((r["rank_score"] for r in rows), reverse=True)
    # the same ranking as the Python API
    lines = docs.read_text().splitlines()
    api = Reranker(str(tiny_qwen3_dir), mode="direct").rerank(
        "which document", [json.loads(x) for x in lines]
    )
    assert [r["id"] for r in rows] == [r["id"] for r in api[:3]]


def test_unknown_models_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "nothing.gguf"))
    with pytest.raises(ModelLoadError, match="without config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not a .gguf"):
        resolve_model(str(tmp_path / "weights.bin"))
    assert resolve_model("Alibaba-NLP/ERank-4B").kind == "hub"


def test_unknown_hub_model_is_a_clear_error_not_a_hang():
    # conftest sets HF_HUB_OFFLINE=1: a hub id that is not cached fails at once, saying how to get it
    start = time.perf_counter()
    with pytest.raises(
        ModelLoadError, match="'no-such-org/no-such-model' is not in the local hub cache.*hf download"
    ):
        Reranker("no-such-org/no-such-model")
    assert time.perf_counter() - start < 5


@pytest.mark.slow
def test_real_default_model_end_to_end_api_and_cli():
    """SmolLM2-135M through the API and the CLI on the shipped sample: same order, sane output."""
    sample = REPO / "examples" / "sample.jsonl"
    docs = [json.loads(line) for line in sample.read_text().splitlines()]
    query = "how do vaccines train the immune system"
    reranker = Reranker()
    assert reranker.mode == "direct" and reranker.model_name == "erank-smol"
    api = reranker.rerank(query, docs, "beir")
    assert sorted(r["id"] for r in api) == sorted(d["id"] for d in docs)
    assert all(r["rank_score"] > 0 for r in api)
    out = erank("rerank", "-q", query, "--docs", str(sample), "--format", "json")
    assert out.returncode == 0, out.stderr.decode()
    rows = json.loads(out.stdout)
    assert [r["id"] for r in rows] == [r["id"] for r in api]
    assert [r["rank_score"] for r in rows] == pytest.approx([r["rank_score"] for r in api], abs=1e-5)
