"""The ``erank`` command line.

Subcommands: ``rerank`` (here), and ``eval``, ``serve``, ``train``, ``batch`` registered by their
packages (``erank.<package>.cli.register``), imported only when present.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from erank.commands.options import HelpFormatter, deprecations, preflight
from erank.errors import ERankError

__all__ = ["main", "build_parser", "version"]

logger = logging.getLogger("erank")

#: Packages that add subcommands: each has a module ``cli`` with ``register(subparsers)``; the
#: parser it adds sets ``func`` (called with the parsed args, returns an exit code).
SUBCOMMAND_MODULES = [
    "erank.commands.rerank",
    "erank.evaluation.cli",
    "erank.serving.cli",
    "erank.training.cli",
    "erank.batch.cli",
    "erank.evaluation.compare_cli",
]


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (the usage itself is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def version() -> str:
    """The installed erank version."""
    try:
        from importlib.metadata import version as dist_version

        return dist_version("erank")
    except Exception:  # noqa: BLE001 - not installed as a distribution (a bare checkout on sys.path)
        from erank import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="erank",
        description="Effective and efficient LLM reranking (ERank and its neighbours).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"erank {version()}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info and warnings, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that package does not exist (yet)
            raise
        module.register(sub)
    return parser


class _LevelFilter(logging.Filter):
    """Which records reach the console: erank's own from one level, other libraries' from another.

    A filter on the handler, not logger levels: libraries reset their own loggers' levels when
    they are imported (bm25s sets DEBUG), after the CLI has configured logging.
    """

    def __init__(self, levels: dict[str, int], others: int) -> None:
        super().__init__()
        self.levels = sorted(levels.items(), key=lambda kv: -len(kv[0]))  # the longest prefix wins
        self.others = others

    def filter(self, record: logging.LogRecord) -> bool:
        for prefix, level in self.levels:
            if record.name == prefix or record.name.startswith(prefix + "."):
                return record.levelno >= level
        return record.levelno >= self.others


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on whatever ``sys.stderr`` is when a record comes. While a progress bar is drawn,
    rich puts its own stream there, which prints the line above the bar instead of through it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # handle() holds the handler's lock here
        super().emit(record)


def _configure_logging(verbose: int, *, progress_lines: bool = False) -> None:
    """Default: erank's warnings only (plus the trainers' progress lines); ``-v``: erank's info and
    other libraries' warnings (deprecations, "Converting a tensor..."); ``-vv``: everything."""
    erank_level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    others = (logging.ERROR, logging.WARNING, logging.DEBUG)[min(verbose, 2)]
    levels = {"erank": erank_level}
    if progress_lines:
        # The trainers report progress (step, loss, ETA) as info lines: a long job is never silent.
        levels["erank.training"] = min(erank_level, logging.INFO)
    root = logging.getLogger()
    if not root.handlers:  # not when embedded (tests, notebooks): their handlers stay as they are
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_LevelFilter(levels, others))
        root.addHandler(handler)
        root.setLevel(min([*levels.values(), others]))
    # Other libraries' warnings go to logging (the filter shows them with -v).
    logging.captureWarnings(True)


def _quiet_libraries() -> None:
    """The CLI owns the console: no library progress bars (-vv shows them)."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # e.g. the one-time GGUF conversion's bars
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, progress_lines=args.command == "train")
    for note in deprecations(args):  # the CLI's own message, like its errors: always shown
        sys.stderr.write(f"erank: warning: {note}\n")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        preflight(args)  # cheap checks of the shared options: before any model loads
        if args.verbose < 2:
            _quiet_libraries()
        return int(args.func(args) or 0)
    except ERankError as exc:
        sys.stderr.write(f"erank: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("erank: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
