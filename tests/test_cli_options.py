"""One set of CLI options, validation before any model loads, --version, quiet help, progress."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from erank.cli import build_parser
from erank.errors import InputError, MissingExtraError, ModelLoadError

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
MODEL_COMMANDS = ("rerank", "eval", "compare", "batch")


def erank(
    *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "erank.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or ENV,
    )


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser by name: ``rerank``, ``train sft``..."""
    parser = build_parser()
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(p: argparse.ArgumentParser, prefix: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{prefix}{name}".strip()] = sub
                    walk(sub, f"{prefix}{name} ")

    walk(parser, "")
    return found


def _visible(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        opt: a
        for a in p._actions
        if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
        for opt in a.option_strings
    }


@pytest.fixture()
def docs_file(tmp_path: Path) -> Path:
    p = tmp_path / "docs.jsonl"
    p.write_text("\n".join(json.dumps({"id": i, "content": f"document {i}"}) for i in range(4)) + "\n")
    return p


def test_version_is_the_installed_one() -> None:
    out = erank("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"erank {version('erank')}"


def test_no_flag_means_two_things_and_shared_options_are_one_definition() -> None:
    commands = _commands()
    assert set(MODEL_COMMANDS) <= set(commands)
    dest_of: dict[str, set[str]] = {}
    for parser in commands.values():
        for opt, action in _visible(parser).items():
            dest_of.setdefault(opt, set()).add(action.dest)
    two_meanings = {opt: dests for opt, dests in dest_of.items() if len(dests) > 1}
    assert not two_meanings, two_meanings
    # the shared options: the same default, type and help text wherever they appear
    for opt in (
        "--model",
        "--engine",
        "--instruction",
        "--truncate-length",
        "--top-k",
        "--queries",
        "--no-progress",
    ):
        seen = {
            (repr(a.default), getattr(a.type, "__name__", None), a.help.split("; default")[0])
            for name in MODEL_COMMANDS
            if (a := _visible(commands[name]).get(opt)) is not None
        }
        assert len(seen) == 1, (opt, seen)
    assert _visible(commands["eval"])["--top-k"].default == _visible(commands["compare"])["--top-k"].default
    for name in ("rerank", "eval", "compare"):
        assert {"--device", "--threads", "--no-progress"} <= set(_visible(commands[name]))


#: The shared options (erank.commands.options) that serve and train eval take, as every command does.
SHARED_IN = {
    "serve": (
        "--model", "--engine", "--method", "--mode", "--max-new-tokens", "--instruction",
        "--truncate-length", "--device", "--threads",
    ),
    "train eval": ("--model", "--engine", "--top-k", "--queries", "--truncate-length", "--device", "--threads"),
}  # fmt: skip


def test_serve_and_train_eval_take_the_shared_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from erank.commands.options import DEFAULT_TRUNCATE_LENGTH
    from erank.serving.cli import settings_from_args

    commands = _commands()
    reference = {**_visible(commands["eval"]), **_visible(commands["rerank"])}
    for name, opts in SHARED_IN.items():
        got = _visible(commands[name])
        for opt in opts:
            a, ref = got[opt], reference[opt]
            same = (a.option_strings, a.dest, a.type, a.choices, a.help.split("; default")[0])
            assert same == (
                ref.option_strings,
                ref.dest,
                ref.type,
                ref.choices,
                ref.help.split("; default")[0],
            )
            if name != "serve":
                assert a.default == ref.default, (name, opt)
    # serve: an option not given is an ERANK_* variable's, else the same default as everywhere
    for var in ("ERANK_ENGINE", "ERANK_METHOD", "ERANK_MAX_TOKENS_PER_DOC"):
        monkeypatch.delenv(var, raising=False)
    s = settings_from_args(build_parser().parse_args(["serve"]))
    assert (s.engine, s.method, s.max_tokens_per_doc) == ("transformers", "erank", DEFAULT_TRUNCATE_LENGTH)
    monkeypatch.setenv("ERANK_METHOD", "yesno")
    assert settings_from_args(build_parser().parse_args(["serve"])).method == "yesno"
    assert settings_from_args(build_parser().parse_args(["serve", "--method", "erank"])).method == "erank"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--engine", "nope"], "argument --engine: invalid choice: 'nope'"),
        (
            ["serve", "--truncate-length", "0"],
            "argument --truncate-length: expected a positive integer, got 0",
        ),
        (["serve", "--threads", "0"], "argument --threads: expected a positive integer, got 0"),
        (["serve", "--port", "70000"], "port must be within 1..65535, got 70000"),
        (["serve", "--method", "listwise", "--mode", "direct"], "method 'listwise' takes no argument 'mode'"),
        (["serve", "--instruction", "bright/biolgy"], "unknown instruction name 'bright/biolgy'"),
        (["serve", "--model", "no-such-org/no-such-model"], "hf download no-such-org/no-such-model"),
        (["train", "eval", "EVAL", "--top-k", "0"], "argument --top-k: expected a positive integer, got 0"),
        (["train", "eval", "EVAL", "--alpha", "2"], "argument --alpha: must be between 0 and 1, got 2"),
        (["train", "eval", "EVAL", "--engine", "nope"], "argument --engine: invalid choice: 'nope'"),
        (
            ["train", "eval", "EVAL", "--model", "no-such-org/no-such-model"],
            "hf download no-such-org/no-such-model",
        ),
        (["train", "eval", "missing.jsonl"], "eval file missing.jsonl does not exist"),
    ],
)
def test_serve_and_train_bad_arguments_fail_at_once_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("{}\n")
    start = time.perf_counter()
    out = erank(*[str(eval_file) if a == "EVAL" else a for a in args])
    elapsed = time.perf_counter() - start
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert out.stdout == ""
    assert elapsed < 20  # no model loads (the server would start listening): the real bound is about 0.5 s


def test_serve_checks_what_the_environment_sets_before_the_model_loads() -> None:
    out = erank("serve", env={**ENV, "ERANK_ENGINE": "nope"})
    assert out.returncode == 2 and out.stderr.startswith("erank: error: unknown engine 'nope' (ERANK_ENGINE)")
    out = erank("serve", "--mode", "direct", env={**ENV, "ERANK_METHOD": "listwise"})
    assert out.returncode == 2 and "method 'listwise' takes no argument 'mode'" in out.stderr
    assert len(out.stderr.splitlines()) == 1


def test_serve_and_train_eval_old_spellings_still_work_and_warn(tmp_path: Path) -> None:
    from erank.commands.options import deprecations, preflight
    from erank.serving.cli import settings_from_args

    old = build_parser().parse_args(["serve", "--max-tokens-per-doc", "64", "--docs"])
    new = build_parser().parse_args(["serve", "--truncate-length", "64", "--swagger-ui"])
    assert settings_from_args(old) == settings_from_args(new) and not deprecations(new)
    assert deprecations(old) == [
        "--max-tokens-per-doc is deprecated here; use --truncate-length",
        "--docs is deprecated here; use --swagger-ui",
    ]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("{}\n")
    old = build_parser().parse_args(
        ["train", "eval", "default", str(eval_file), "--max-queries", "2", "--candidates", "3"]
    )
    new = build_parser().parse_args(["train", "eval", str(eval_file), "--queries", "2", "--top-k", "3"])
    preflight(old)
    preflight(new)
    assert (old.model, old.queries, old.top_k) == (new.model, new.queries, new.top_k) == (None, 2, 3)
    assert deprecations(old) == [
        "the positional MODEL is deprecated here; use --model MODEL",
        "--max-queries is deprecated here; use --queries",
        "--candidates is deprecated here; use --top-k",
    ]


def test_help_never_says_default_none() -> None:
    for name, parser in _commands().items():
        text = parser.format_help()
        assert "(default: None)" not in text, name
        assert "(default: False)" not in text, name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alpha", "2"], "argument --alpha: must be between 0 and 1, got 2"),
        (["-n", "0"], "argument --top-n/-n: expected a positive integer, got 0"),
        (["--truncate-length", "0"], "expected a positive integer, got 0"),
        (["--engine", "nope"], "invalid choice: 'nope'"),
        # checked before the model: the model named here does not exist, and that is not the error
        (
            ["--method", "listwise", "--mode", "direct"],
            "method 'listwise' takes no argument 'mode'; its arguments are: window",
        ),
        (["--instruction", "bright/biolgy"], "unknown instruction name 'bright/biolgy'"),
        (["--max-new-tokens", "0"], "expected a positive integer, got 0"),
    ],
)
def test_bad_arguments_fail_at_once_with_one_line(
    docs_file: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    start = time.perf_counter()
    out = erank("rerank", "-q", "q", "--docs", str(docs_file), "--model", str(tmp_path / "none.gguf"), *args)
    elapsed = time.perf_counter() - start
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "does not exist" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert out.stdout == ""
    assert elapsed < 20  # a model load would not even start: the real bound is about 0.5 s


def test_offline_hub_id_fails_at_once_saying_how_to_get_it(docs_file: Path) -> None:
    out = erank("rerank", "-q", "q", "--docs", str(docs_file), "--model", "no-such-org/no-such-model")
    assert out.returncode == 2
    assert "is not in the local hub cache and the hub is offline (HF_HUB_OFFLINE=1)" in out.stderr
    assert "hf download no-such-org/no-such-model" in out.stderr and len(out.stderr.splitlines()) == 1


def test_unreachable_hub_fails_at_once_instead_of_retrying(docs_file: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(docs_file.parent / "hf"))  # nothing listens on 9
    start = time.perf_counter()
    out = erank(
        "rerank", "-q", "q", "--docs", str(docs_file), "--model", "no-such-org/no-such-model", env=env
    )
    assert out.returncode == 2
    assert "the hub (http://127.0.0.1:9) is unreachable" in out.stderr and "Retrying" not in out.stderr
    assert time.perf_counter() - start < 20


def test_method_arguments_are_checked_by_name_before_the_model_loads(tmp_path: Path) -> None:
    from erank import Reranker

    missing = str(tmp_path / "missing.gguf")  # loading it would be a ModelLoadError
    with pytest.raises(
        InputError, match=r"'windw' \(did you mean 'window'\?\); its arguments are: window, step"
    ):
        Reranker(missing, method="listwise", windw=5)
    with pytest.raises(InputError, match="unknown method 'listwse'"):
        Reranker(missing, method="listwse")
    with pytest.raises(ModelLoadError):
        Reranker(missing, method="listwise", window=5)  # right arguments: now the model is the problem


def test_rerank_old_spellings_still_work_and_warn(docs_file: Path, tiny_qwen3_dir: Path) -> None:
    out = erank(
        "rerank", "-q", "which document", "--docs", str(docs_file), "--model", str(tiny_qwen3_dir),
        "--mode", "direct", "-k", "2", "-i", "beir", "--format", "json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 2 and [r["rank"] for r in rows] == [1, 2]
    assert "erank: warning: -k is deprecated here; use --top-n" in out.stderr
    assert "erank: warning: -i is deprecated here; use --instruction" in out.stderr
    # the same command in the new spelling prints the same rows and no warning
    new = erank(
        "rerank", "-q", "which document", "--docs", str(docs_file), "--model", str(tiny_qwen3_dir),
        "--mode", "direct", "--top-n", "2", "--instruction", "beir", "--format", "json",
    )  # fmt: skip
    assert new.returncode == 0 and new.stderr == ""
    assert [r["id"] for r in json.loads(new.stdout)] == [r["id"] for r in rows]


def test_batch_short_i_is_deprecated_but_works(tmp_path: Path) -> None:
    out = erank("batch", "-i", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o"))
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert "-i is deprecated here; use --input" in out.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from erank.progress import progress_bar

    monkeypatch.delenv("ERANK_NO_PROGRESS", raising=False)
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    with progress_bar(3, "scoring", unit="documents") as bar:
        for _ in range(3):
            bar.advance()
    drawn = term.getvalue()
    assert "scoring" in drawn and "ETA" in drawn
    pipe = io.StringIO()  # not a terminal: nothing
    monkeypatch.setattr(sys, "stderr", pipe)
    with progress_bar(3, "scoring") as bar:
        bar.advance(3)
    assert pipe.getvalue() == "" and bar.completed == 3
    monkeypatch.setattr(sys, "stderr", term := _Terminal())
    monkeypatch.setenv("ERANK_NO_PROGRESS", "1")  # what --no-progress sets
    with progress_bar(3, "scoring") as bar:
        bar.advance(3)
    assert term.getvalue() == ""


def test_missing_extra_names_the_real_extra_and_a_checkout_install() -> None:
    text = str(MissingExtraError("trl", "training", "SFT"))
    assert "extra 'train'" in text and "-e '.[train]'" in text and "erank[training]" not in text


def test_eval_prints_only_the_table_unless_verbose(shared_data: Path, tmp_path: Path) -> None:
    env = {**ENV, "ERANK_CACHE": str(tmp_path / "cache")}
    args = ["eval", "--data", str(shared_data / "adi"), "--first-stage-only", "--top-k", "20", "--no-plots"]
    quiet = erank(*args, "--out", str(tmp_path / "a"), env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # bm25s logs DEBUG lines (it sets its own logger to DEBUG): not shown
    assert "| bm25 |" in quiet.stdout and "| R@20 |" in quiet.stdout  # R@100 of a top-20 list is R@20
    loud = erank("-vv", *args, "--out", str(tmp_path / "b"), env={**env, "ERANK_CACHE": str(tmp_path / "c2")})
    assert loud.returncode == 0 and "DEBUG bm25s" in loud.stderr
