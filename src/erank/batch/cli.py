"""``erank batch``: rerank a file of (query, document) pairs on Ray, resumably.

erank batch --input pairs.jsonl --output out/ --model Alibaba-NLP/ERank-4B --workers 4 --gpus-per-worker 1
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from erank.commands import options
from erank.errors import InputError

__all__ = ["register", "run", "route_ray_output", "core_console_to_logging"]

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = options.add_command(
        sub,
        "batch",
        "rerank a large file of query-document pairs on Ray (resumable)",
        "Score (qid, query, docid, text[, first_stage_score]) pairs with a pool of reranker "
        "actors on Ray and write Parquet shards, a TREC run file and an errors file. Rerun the same "
        "command after a crash or kill to resume: finished shards are skipped.",
    )
    p.add_argument(
        "--input",
        action="append",
        metavar="PAIRS",
        help="required: a JSONL or Parquet file (or folder of them) with qid, query, docid, text and "
        "optional first_stage_score; repeat for several",
    )
    p.add_argument("-i", dest="input", action=_DeprecatedAppend, use="--input")
    p.add_argument(
        "--output", "-o", required=True, metavar="DIR", help="output folder (also the resume state)"
    )
    options.add_model_options(p)
    options.add_instruction(p)
    options.add_truncate_length(p)
    p.add_argument(
        "--batch-tokens",
        type=options.positive_int,
        default=None,
        help="engine batch size in tokens (default: the engine's)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="an existing Ray cluster (ray start --head prints it); default a local Ray",
    )
    p.add_argument(
        "--workers", type=options.positive_int, default=1, help="reranker actors (each loads the model once)"
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs per actor (1 for one worker per GPU; default 0)",
    )
    p.add_argument(
        "--cpus-per-worker",
        type=float,
        default=1.0,
        help="CPUs per actor, also its torch threads (default 1)",
    )
    p.add_argument(
        "--shards",
        type=options.positive_int,
        default=None,
        help="number of qid shards (fixed at the first run); default from input size",
    )
    p.add_argument("--run-tag", default="erank", help="tag in the last column of the TREC run")
    options.add_progress(p)
    p.add_argument("--progress-bars", action="store_true", help="also show Ray Data's own progress bars")
    p.set_defaults(func=run)


class _DeprecatedAppend(options.DeprecatedAlias):
    """``-i PAIRS``: the old short form of ``--input`` (repeatable like it)."""

    def __call__(
        self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None
    ) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        super().__call__(parser, namespace, [*items, values], option_string)


def route_ray_output() -> None:
    """Ray's Python loggers (``ray``, ``ray.data``) print on stderr with handlers of their own
    ("Token authentication is enabled for this Ray cluster...", "Started a local Ray instance",
    Ray Data's execution plan). Those handlers go; the records reach the command line's handler,
    which shows other libraries' warnings with ``-v`` (Ray Data's log files stay)."""
    try:
        import ray  # noqa: F401 - sets up the "ray" logger
        import ray.data  # noqa: F401 - sets up the "ray.data" logger
    except ImportError:
        return  # run_batch says which extra to install
    for name in ("ray", "ray.data"):
        ray_logger = logging.getLogger(name)
        for handler in list(ray_logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                ray_logger.removeHandler(handler)
        ray_logger.propagate = True


#: A console line of Ray's C++ core: ``[2026-12-02 17:21:57,592 E 4439 4439] core_worker.cc:2465: ...``
_CORE_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,.]+ ([DIWEF]) \d+ \d+\] (.*)$")
#: Its level here. ERROR lines are at most warnings: what fails the job reaches the command as an
#: exception with its message; the driver's ERROR lines are notices such as "Actor ... has
#: constructor arguments in the object store and max_restarts > 0" (ray-project/ray#53727),
#: printed for every Ray Data actor pool. Everything is also in Ray's python-core-driver log file.
_CORE_LEVELS = {
    "D": logging.DEBUG,
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.WARNING,
    "F": logging.ERROR,
}


def _forward_core_lines(fd: int) -> None:
    core_logger = logging.getLogger("ray.core")
    with open(fd, "rb") as stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            match = _CORE_LINE.match(line)
            if match:
                core_logger.log(_CORE_LEVELS[match.group(1)], "%s", match.group(2))
            else:
                core_logger.warning("%s", line)


@contextmanager
def core_console_to_logging() -> Iterator[None]:
    """While Ray runs in this process, its C++ core's console lines go to logging.

    The core worker writes them to file descriptor 2 directly, past Python: descriptor 2 becomes a
    pipe whose lines go to the ``ray.core`` logger (shown with ``-v``, see :data:`_CORE_LEVELS`),
    and Python's ``sys.stderr`` (the progress bar, log lines, tracebacks) keeps the real stream.
    Nothing changes when ``sys.stderr`` is not descriptor 2 (embedded: tests, notebooks).
    """
    try:
        own_fd = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        own_fd = False
    if not own_fd:
        yield
        return
    sys.stderr.flush()
    # A copy of the real stream, kept open for good: faulthandler (which Ray enables while this
    # runs) writes crash tracebacks to it later too.
    real_fd = os.dup(2)
    os.set_inheritable(real_fd, False)
    real = io.TextIOWrapper(
        io.FileIO(real_fd, "w", closefd=False),
        encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )
    read_end, write_end = os.pipe()
    reader = threading.Thread(
        target=_forward_core_lines, args=(read_end,), name="erank-ray-core", daemon=True
    )
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    before = sys.stderr
    sys.stderr = real
    try:
        yield
    finally:
        sys.stderr = before
        os.dup2(real_fd, 2)  # the pipe's last writer here is gone: the reader reads to the end
        reader.join(timeout=5)


def run(args: argparse.Namespace) -> int:
    from erank.batch.pipeline import BatchConfig, BatchProgress, run_batch
    from erank.progress import progress_bar

    if not args.input:  # not argparse's required=True: the deprecated -i must count too
        raise InputError("--input is required: a JSONL or Parquet file of (qid, query, docid, text) pairs")
    route_ray_output()
    cfg = BatchConfig(
        inputs=args.input,
        output=args.output,
        model=args.model,
        engine=args.engine,
        method=args.method,
        mode=args.mode,
        instruction=args.instruction,
        truncate_length=args.truncate_length,
        batch_tokens=args.batch_tokens,
        method_kwargs=options.method_kwargs_from(args),
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        num_shards=args.shards,
        ray_address=args.ray_address,
        run_tag=args.run_tag,
        show_progress_bars=args.progress_bars,
    )

    with (
        core_console_to_logging(),
        progress_bar(None, "shards", unit="shards", enabled=options.progress_from(args)) as bar,
    ):

        def show(p: BatchProgress) -> None:
            bar.update(completed=p.shards_done, total=p.shards_total)
            logger.info(
                "shard %s done on %s (%d/%d shards), %d pairs this run, %.1f pairs/s",
                p.shard, p.node, p.shards_done, p.shards_total, p.pairs, p.pairs_per_second,
            )  # fmt: skip

        summary = run_batch(cfg, progress=show)
    sys.stderr.write(
        f"erank batch: {summary.pairs} pairs of {summary.queries} queries scored, {summary.errors} rows in "
        f"{summary.errors_file}; run file {summary.run_file} ({summary.shards_skipped} shards were already done)\n"
    )
    sys.stdout.write(
        json.dumps(
            {
                "pairs": summary.pairs,
                "queries": summary.queries,
                "errors": summary.errors,
                "output": summary.output,
            }
        )
        + "\n"
    )
    return 0
