"""``erank rerank``: rerank documents from a file (or stdin) for one query.

Documents come as JSONL (one object per line with ``content`` or ``text``, optional ``id`` and
``first_stage_score``) or as plain text, one document per line. Output: a table on a terminal,
JSON otherwise (or as ``--format`` says).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from erank.commands import options
from erank.errors import DataFormatError, InputError
from erank.types import Document, RerankResult, to_documents

if TYPE_CHECKING:
    from erank.reranker import Reranker

__all__ = ["register", "read_documents", "run"]

_CHUNK = 16


def register(sub: Any) -> None:
    p = options.add_command(
        sub,
        "rerank",
        "rerank documents for a query",
        "Rerank documents for one query and print them, most relevant first.",
    )
    p.add_argument("--query", "-q", required=True, help="the query text")
    p.add_argument(
        "--docs",
        "-d",
        required=True,
        help="a JSONL file (content or text, optional id, first_stage_score per line), a plain text file "
        "(one document per line), or - for standard input",
    )
    options.add_instruction(p)
    options.add_alias(p, "-i", new="--instruction")
    options.add_model_options(p)
    p.add_argument(
        "--top-n",
        "-n",
        type=options.positive_int,
        default=None,
        metavar="N",
        help="print only the N most relevant documents (all are scored); default all",
    )
    options.add_alias(p, "--top-k", "-k", new="--top-n")
    options.add_truncate_length(p)
    p.add_argument(
        "--alpha",
        type=options.unit_float,
        default=None,
        help="also fuse with first_stage_score, weight 0..1 of the first stage (hybrid, spec 2.4); default off",
    )
    p.add_argument(
        "--format",
        choices=["table", "json", "jsonl"],
        default=None,
        help="output format; default table on a terminal, json otherwise",
    )
    p.add_argument(
        "--reasoning", action="store_true", help="include the model's reasoning text in json output"
    )
    options.add_runtime_options(p)
    options.add_progress(p)
    p.set_defaults(func=run)


def _decode_lines(raw: bytes, source: str) -> list[str]:
    lines = raw.split(b"\n")
    out = []
    for n, line in enumerate(lines, start=1):
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataFormatError(
                f"{source}, line {n}: invalid UTF-8 at byte {exc.start} ({exc.reason}); save the file as UTF-8"
            ) from None
    return out


def read_documents(path: str, stdin: TextIO | None = None) -> list[Document]:
    """Read documents from a JSONL or plain-text file (``-`` for standard input)."""
    if path == "-":
        stream = stdin or sys.stdin
        raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read().encode("utf-8")
        source = "standard input"
    else:
        p = Path(path)
        if not p.exists():
            raise InputError(f"documents file {path} does not exist")
        if p.is_dir():
            raise InputError(f"documents file {path} is a folder; pass a JSONL or text file")
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read documents file {path}: {exc.strerror}") from exc
        source = str(path)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = [(n, line.rstrip("\r")) for n, line in enumerate(_decode_lines(raw, source), start=1)]
    lines = [(n, line) for n, line in lines if line.strip()]
    if not lines:
        return []
    if not lines[0][1].lstrip().startswith("{"):
        return [Document(content=line) for _, line in lines]
    items: list[Any] = []
    for n, line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(
                f"{source}, line {n}: invalid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{source}, line {n}: expected a JSON object, got {type(obj).__name__}")
        try:
            items.extend(to_documents([obj]))
        except InputError as exc:
            raise DataFormatError(
                f"{source}, line {n}: {str(exc).replace('document 0', 'document')}"
            ) from None
    return items


def score_in_chunks(
    reranker: Reranker,
    query: str,
    docs: list[Document],
    instruction: str | None,
    truncate_length: int | None,
    *,
    return_reasoning: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> RerankResult:
    """Score pointwise methods chunk by chunk (for progress); others in one call."""
    if not reranker.pointwise or len(docs) <= _CHUNK:
        res: RerankResult = reranker.score(
            query, docs, instruction, truncate_length, return_reasoning=return_reasoning
        )
        if on_progress:
            on_progress(len(docs))
        return res
    parts: list[RerankResult] = []
    for start in range(0, len(docs), _CHUNK):
        chunk = docs[start : start + _CHUNK]
        parts.append(
            reranker.score(query, chunk, instruction, truncate_length, return_reasoning=return_reasoning)
        )
        if on_progress:
            on_progress(len(chunk))
    return _merge(parts)


def _merge(parts: list[RerankResult]) -> RerankResult:
    from erank.types import Usage, ranking_from_scores

    first = parts[0]
    docs = [d for p in parts for d in p.documents]
    scores = [s for p in parts for s in p.scores]
    for i, s in enumerate(scores):
        s.index = i
    usage = Usage()
    for p in parts:
        usage.add(p.usage)
    return RerankResult(
        query=first.query,
        instruction=first.instruction,
        documents=docs,
        scores=scores,
        ranking=ranking_from_scores([s.score for s in scores]),
        usage=usage,
        method=first.method,
        model=first.model,
        mode=first.mode,
    )


def _rows(result: RerankResult, alpha: float | None, with_reasoning: bool) -> list[dict[str, Any]]:
    rows = []
    for rank, (doc, sc) in enumerate(result.ranked(), start=1):
        row = doc.as_dict()
        row.update(
            rank=rank,
            rank_score=sc.score,
            label=sc.label,
            probability=sc.probability,
            expected_score=sc.expected_score,
            parsed=sc.parsed,
            truncated=sc.truncated,
        )
        if with_reasoning:
            row["reasoning"] = sc.reasoning
        rows.append(row)
    if alpha is not None:
        from erank.scoring import hybrid_scores

        rows = hybrid_scores(rows, alpha)
        for rank, row in enumerate(rows, start=1):
            row["rank"] = rank
    return rows


def _print_table(rows: Iterable[dict[str, Any]], result: RerankResult, hybrid: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.query}  ({result.model}, {result.method} {result.mode})")
    table.add_column("#", justify="right")
    table.add_column("id")
    table.add_column("score", justify="right")
    table.add_column("s", justify="right")
    table.add_column("P(s)", justify="right")
    if hybrid:
        table.add_column("hybrid", justify="right")
    table.add_column("document")
    for row in rows:
        text = str(row.get("content", row.get("text", "")))
        cells = [
            str(row["rank"]),
            str(row.get("id", "")),
            f"{row['rank_score']:.4f}",
            "-" if row["label"] is None else str(row["label"]),
            "-" if row["probability"] is None else f"{row['probability']:.3f}",
        ]
        if hybrid:
            cells.append(f"{row['hybrid_score']:.3f}")
        cells.append(text[:80] + ("…" if len(text) > 80 else ""))
        table.add_row(*cells)
    Console().print(table)


def run(args: argparse.Namespace) -> int:
    from erank.progress import progress_bar

    docs = read_documents(args.docs)
    if args.alpha is not None and any(d.first_stage_score is None for d in docs):
        raise InputError("--alpha needs a first_stage_score on every document (JSONL input)")
    reranker = options.load_reranker(args)
    with progress_bar(len(docs), "scoring", unit="documents", enabled=options.progress_from(args)) as bar:
        result = score_in_chunks(
            reranker, args.query, docs, args.instruction, args.truncate_length,
            return_reasoning=args.reasoning, on_progress=bar.advance,
        )  # fmt: skip
    rows = _rows(result, args.alpha, args.reasoning)
    if args.top_n is not None:
        rows = rows[: args.top_n]
    fmt = args.format or ("table" if sys.stdout.isatty() else "json")
    if fmt == "table":
        _print_table(rows, result, args.alpha is not None)
    elif fmt == "jsonl":
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    if result.usage.unparsed:
        hint = (
            "; a small model seldom finishes its reasoning: try --mode direct"
            if result.mode == "reasoning"
            else ""
        )
        sys.stderr.write(
            f"erank: {result.usage.unparsed} of {len(docs)} outputs did not parse (scored 0){hint}\n"
        )
    return 0
