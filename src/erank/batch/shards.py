"""What runs inside Ray: rows read and checked, then shards scored and written by
:class:`ShardScorer` actors, each loading the reranker once."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from erank.batch.config import _RAW_LIMIT
from erank.batch.output import _atomic_write_bytes, _atomic_write_text
from erank.batch.rows import (
    group_rows,
    order_key,
    parse_json_line,
    parse_record,
    shard_of,
    strictly_decreasing,
)
from erank.errors import ERankError

__all__ = ["ShardScorer"]

logger = logging.getLogger(__name__)


#: The columns of a normalised input shard: (name, pyarrow type).
_NORMAL_FIELDS = (
    ("shard", "int64"),
    ("qid", "string"),
    ("query", "string"),
    ("docid", "string"),
    ("text", "string"),
    ("first_stage_score", "float64"),
    ("error", "string"),
    ("source", "string"),
    ("raw", "string"),
)
_NORMAL_COLUMNS = tuple(name for name, _ in _NORMAL_FIELDS)


def _schema(fields: tuple[tuple[str, str], ...]) -> Any:
    """The pyarrow schema of ``(name, pyarrow type name)`` fields."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in fields])


def _raw_repr(obj: Any, raw: bytes | None) -> str:
    if raw is not None:
        return raw[:_RAW_LIMIT].decode("utf-8", "backslashreplace")
    try:
        s = json.dumps(obj, ensure_ascii=False, default=repr)
        s.encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        s = repr(obj)
    return s[:_RAW_LIMIT]


def _normal_rows(
    items: Iterator[tuple[Any, bytes | None, str]], num_shards: int, done: frozenset[int]
) -> Any:
    """(obj or None, raw bytes or None, source) -> the normalised table (rows of done shards dropped)."""
    import pyarrow as pa

    cols: dict[str, list[Any]] = {c: [] for c in _NORMAL_COLUMNS}
    for obj, raw, source in items:
        if raw is not None:
            parsed, err, obj = parse_json_line(raw)
        else:
            parsed, err = parse_record(obj)
        row: tuple[Any, ...]
        if parsed is not None:
            qid, query, docid, text, fss = parsed
            shard = shard_of(qid, num_shards)
            row = (shard, qid, query, docid, text, fss, None, source, "")
        else:
            # Keep an invalid row with its query when the qid is readable, so the error lands in
            # that query's shard; otherwise a shard from its bytes (stable too).
            bad_qid: str | None = None
            if (
                isinstance(obj, dict)
                and isinstance(obj.get("qid"), (str, int))
                and not isinstance(obj["qid"], bool)
            ):
                bad_qid = str(obj["qid"]).strip() or None
            rep = _raw_repr(obj, raw)
            key = bad_qid if bad_qid is not None else f"\0{source}\0{rep}"
            shard = shard_of(key, num_shards)
            bad_docid = obj.get("docid") if isinstance(obj, dict) else None
            row = (
                shard,
                bad_qid,
                None,
                None if bad_docid is None else str(bad_docid)[:200],
                None,
                None,
                err,
                source,
                rep,
            )
        if row[0] in done:
            continue
        for c, v in zip(_NORMAL_COLUMNS, row, strict=True):
            cols[c].append(v)
    return pa.Table.from_pydict(cols, schema=_schema(_NORMAL_FIELDS))


def _normalise_jsonl(batch: Any, num_shards: int, done: frozenset[int]) -> Any:
    paths = batch.column("path").to_pylist()
    lines = batch.column("line").to_pylist()
    raws = batch.column("raw").to_pylist()
    items = ((None, raw, f"{path}:{line}") for path, line, raw in zip(paths, lines, raws, strict=True))
    return _normal_rows(items, num_shards, done)


def _normalise_parquet(batch: Any, num_shards: int, done: frozenset[int]) -> Any:
    rows = batch.to_pylist()
    items = ((r, None, str(r.pop("path", "parquet"))) for r in rows)
    return _normal_rows(items, num_shards, done)


def _jsonl_datasource(paths: list[str]) -> Any:
    from ray.data.datasource import FileBasedDatasource

    class JsonLinesBytes(FileBasedDatasource):  # type: ignore[misc]
        """JSON lines as raw bytes with their line numbers: decoding happens per row, later."""

        _FILE_EXTENSIONS = ["jsonl", "ndjson", "json", "gz"]

        def _read_stream(self, f: Any, path: str) -> Iterator[Any]:
            import pyarrow as pa

            data = f.readall()
            if path.endswith(".gz"):
                import gzip

                data = gzip.decompress(data)
            chunk = 20_000
            numbers: list[int] = []
            raws: list[bytes] = []
            for n, line in enumerate(data.split(b"\n"), start=1):
                if not line.strip():
                    continue
                numbers.append(n)
                raws.append(line.rstrip(b"\r"))
                if len(raws) >= chunk:
                    yield pa.table(
                        {"path": [path] * len(raws), "line": numbers, "raw": pa.array(raws, pa.binary())}
                    )
                    numbers, raws = [], []
            if raws:
                yield pa.table(
                    {"path": [path] * len(raws), "line": numbers, "raw": pa.array(raws, pa.binary())}
                )

    return JsonLinesBytes(paths)


class ShardScorer:
    """A Ray actor (through ``map_groups``): loads the reranker once, scores and writes whole shards."""

    def __init__(self, settings: dict[str, Any], output: str, cpus: float) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            import torch

            torch.set_num_threads(max(1, int(cpus)))
        except ImportError:  # pragma: no cover
            pass
        from erank.reranker import Reranker

        self.settings = settings
        self.out = Path(output)
        kwargs = dict(settings.get("method_kwargs") or {})
        if settings.get("batch_tokens"):
            kwargs["batch_tokens"] = settings["batch_tokens"]
        self.reranker = Reranker(
            settings["model"],
            engine=settings["engine"],
            method=settings["method"],
            mode=settings["mode"],
            **kwargs,
        )
        try:
            import ray

            self.node = ray.get_runtime_context().get_node_id()[:12]
        except Exception:  # pragma: no cover - outside Ray
            self.node = socket.gethostname()

    def __call__(self, table: Any) -> Any:
        import pyarrow as pa

        start = time.perf_counter()
        rows = table.to_pylist()
        shard = int(rows[0]["shard"])
        errors = [r for r in rows if r["error"] is not None]
        valid = [r for r in rows if r["error"] is None]
        scored: dict[str, list[Any]] = {c: [] for c in _SCORE_COLUMNS}
        queries = 0
        for qid, rs in group_rows(valid).items():
            # One query text per qid: the most frequent (ties: the smallest); other rows are errors.
            counts: dict[str, int] = {}
            for r in rs:
                counts[r["query"]] = counts.get(r["query"], 0) + 1
            query = min(counts, key=lambda q: (-counts[q], q))
            keep, seen = [], set()
            for r in rs:
                if r["query"] != query:
                    errors.append(
                        {**r, "error": f"qid {qid} has another query text in other rows ({query[:60]!r})"}
                    )
                elif r["docid"] in seen:
                    errors.append(
                        {**r, "error": f"duplicate (qid, docid) = ({qid}, {r['docid']}); kept the first"}
                    )
                else:
                    seen.add(r["docid"])
                    keep.append(r)
            docs = [{"content": r["text"], "id": r["docid"]} for r in keep]
            try:
                result = self.reranker.score(
                    query, docs, self.settings["instruction"], self.settings["truncate_length"]
                )
            except ERankError as exc:
                errors.extend({**r, "error": f"could not score this query: {exc}"} for r in keep)
                continue
            queries += 1
            order = sorted(
                range(len(keep)),
                key=lambda i: order_key(
                    result.scores[i].score, keep[i]["first_stage_score"], keep[i]["docid"]
                ),
            )
            trec = strictly_decreasing([result.scores[i].score for i in order])
            for rank, (i, ts) in enumerate(zip(order, trec, strict=True), start=1):
                s = result.scores[i]
                r = keep[i]
                for c, v in (
                    ("qid", qid),
                    ("docid", r["docid"]),
                    ("rank", rank),
                    ("score", float(s.score)),
                    ("trec_score", ts),
                    ("label", s.label),
                    ("probability", s.probability),
                    ("expected_score", s.expected_score),
                    ("first_stage_score", r["first_stage_score"]),
                    ("parsed", bool(s.parsed)),
                    ("truncated", bool(s.truncated)),
                    ("shard", shard),
                ):
                    scored[c].append(v)
        name = f"part-{shard:05d}"
        buf = pa.BufferOutputStream()
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pydict(scored, schema=_schema(_SCORE_FIELDS)), buf)
        _atomic_write_bytes(self.out / "scores" / f"{name}.parquet", buf.getvalue().to_pybytes())
        errors.sort(key=lambda r: (r["source"], r["qid"] or "", r["docid"] or ""))
        lines = "".join(
            json.dumps(
                {
                    "source": r["source"],
                    "qid": r["qid"],
                    "docid": r["docid"],
                    "reason": r["error"],
                    "row": r["raw"]
                    or json.dumps(
                        {"qid": r["qid"], "query": r["query"], "docid": r["docid"], "text": r["text"]}
                    )[:_RAW_LIMIT],
                },
                ensure_ascii=False,
            )
            + "\n"
            for r in errors
        )
        _atomic_write_text(self.out / "errors" / f"{name}.jsonl", lines)
        seconds = time.perf_counter() - start
        info = {
            "shard": shard,
            "pairs": len(scored["qid"]),
            "errors": len(errors),
            "queries": queries,
            "seconds": round(seconds, 3),
            "node": self.node,
        }
        _atomic_write_text(self.out / "_done" / f"{shard:05d}.json", json.dumps(info) + "\n")
        return pa.table({k: [v] for k, v in info.items()})


#: The columns of a scored shard: (name, pyarrow type).
_SCORE_FIELDS = (
    ("qid", "string"),
    ("docid", "string"),
    ("rank", "int32"),
    ("score", "float64"),
    ("trec_score", "float64"),
    ("label", "int32"),
    ("probability", "float64"),
    ("expected_score", "float64"),
    ("first_stage_score", "float64"),
    ("parsed", "bool_"),
    ("truncated", "bool_"),
    ("shard", "int64"),
)
_SCORE_COLUMNS = tuple(name for name, _ in _SCORE_FIELDS)


def _erank_cause(exc: BaseException) -> ERankError | None:
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ERankError):
            return cur
        inner = getattr(cur, "cause", None)
        cur = inner if isinstance(inner, BaseException) else (cur.__cause__ or cur.__context__)
    return None
