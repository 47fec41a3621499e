"""``erank compare``: the methods comparison table for any model with one command.

.. code-block:: console

    erank compare --first-stage ../shared/data/trec-dl20-passage/BM25/retrieve_results_dl20_top100.json \\
        --methods erank,erank-0-3,yesno,listwise,first --model M --top-k 20 --queries 10 --out out/

``--set METHOD.ARG=VALUE`` passes a constructor argument to one method (``--set
rank1.max_new_tokens=64``); ``--queries-for METHOD=N`` runs a slow method on fewer queries.
A method can be listed twice with different arguments as ``NAME@TAG`` (``setwise@direct`` with
``--set setwise@direct.mode=direct``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from erank.commands import options
from erank.errors import InputError

__all__ = ["register", "parse_sets", "parse_queries_for"]


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "none":
        return None
    return text


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["rank1.max_new_tokens=64"]`` -> ``{"rank1": {"max_new_tokens": 64}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, arg = key.rpartition(".")
        if not sep or not dot or not method or not arg:
            raise InputError(f"--set takes METHOD.ARG=VALUE (e.g. rank1.max_new_tokens=64), got {item!r}")
        out.setdefault(method, {})[arg] = _value(value)
    return out


def parse_queries_for(text: str | None) -> dict[str, int]:
    """``"rank1=5,pairwise=2"`` -> ``{"rank1": 5, "pairwise": 2}``."""
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, n = part.partition("=")
        if not sep or not n.strip().isdigit() or int(n) <= 0:
            raise InputError(f"--queries-for takes METHOD=N[,METHOD=N...] with N > 0, got {part!r}")
        out[name.strip()] = int(n)
    return out


def _methods(args: argparse.Namespace) -> list[str]:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise InputError("--methods is empty; name at least one method (e.g. erank,yesno)")
    return methods


def _check(args: argparse.Namespace) -> None:
    """The method names, their ``--set`` arguments and ``--queries-for``: before the model loads."""
    from erank.methods import METHODS, check_method_kwargs

    if not args.first_stage:  # not argparse's required=True: the deprecated --data must count too
        raise InputError(
            "--first-stage FILE is required: a rank_llm candidate JSON (retrieve_results_*.json)"
        )
    methods = _methods(args)
    unknown = [m for m in methods if m.split("@")[0] not in METHODS]
    if unknown:
        raise InputError(f"unknown methods {unknown}; available: {', '.join(sorted(METHODS))}")
    sets = parse_sets(args.set or [])
    for label in methods:
        check_method_kwargs(label.split("@")[0], sets.get(label, {}))
    parse_queries_for(args.queries_for)


def _run(args: argparse.Namespace) -> int:
    from erank.evaluation.compare import format_table, run_comparison

    rows = run_comparison(
        args.first_stage,
        _methods(args),
        model=args.model,
        engine=args.engine,
        qrels=args.qrels,
        top_k=args.top_k,
        queries=args.queries,
        queries_for=parse_queries_for(args.queries_for),
        method_kwargs=parse_sets(args.set or []),
        instruction=args.instruction,
        truncate_length=args.truncate_length,
        out_dir=args.out,
        progress=not args.no_progress,
        device=args.device,
    )
    sys.stdout.write(json.dumps(rows, indent=2) + "\n" if args.format == "json" else format_table(rows))
    return 0


def register(subparsers: Any) -> None:
    """Add ``erank compare`` to the ``erank`` command line."""
    p = options.add_command(
        subparsers,
        "compare",
        "compare ranking methods on first-stage candidates (nDCG@10, calls, tokens, time)",
        "Rerank the same first-stage candidates with several methods and print the comparison table.",
    )
    p.add_argument(
        "--first-stage",
        metavar="FILE",
        help="required: the first-stage candidates, a rank_llm candidate JSON (retrieve_results_*.json)",
    )
    options.add_alias(p, "--data", new="--first-stage", use="--first-stage FILE")
    p.add_argument(
        "--qrels", default=None, help="TREC qrels (default: a qrels*.txt beside or above the candidates)"
    )
    p.add_argument(
        "--methods",
        default="erank,erank-0-3,yesno,listwise,first",
        help="comma-separated method names (default erank,erank-0-3,yesno,listwise,first)",
    )
    options.add_model_options(p, method=False)
    options.add_top_k(p)
    options.add_queries(p)
    p.add_argument("--queries-for", default=None, help="per-method query caps, e.g. rank1=5,pairwise=2")
    p.add_argument(
        "--set", action="append", metavar="METHOD.ARG=VALUE", help="a method argument (repeatable)"
    )
    options.add_instruction(p)
    options.add_truncate_length(p)
    p.add_argument(
        "--out", default=None, help="folder for runs, rows.json and table.md (default: none written)"
    )
    p.add_argument(
        "--format", choices=["table", "json"], default="table", help="print the table or the rows as JSON"
    )
    p.add_argument(
        "--json", dest="format", action=options.DeprecatedAlias, nargs=0, const="json", use="--format json"
    )
    options.add_progress(p)
    options.add_runtime_options(p)
    options.add_check(p, _check)
    p.set_defaults(func=_run)
