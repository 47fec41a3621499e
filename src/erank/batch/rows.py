"""Ray-free pieces of the batch job: row validation, the qid partition, ordering, TREC output.

Everything here is plain Python so it can be tested (and reasoned about) without a cluster.

>>> from erank.batch.rows import parse_record, shard_of, strictly_decreasing
>>> parse_record({"qid": 1, "query": "q", "docid": "d1", "text": "t"})
(('1', 'q', 'd1', 't', None), None)
>>> parse_record({"qid": 1, "query": "q", "docid": "d1", "text": "  "})[1]
'empty text'
>>> shard_of("1132213", 16)
6
>>> strictly_decreasing([3.0, 2.0, 2.0, 1.0])[2] < 2.0
True
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from erank.datasets.formats import strictly_decreasing  # the one home; re-exported for batch callers

__all__ = [
    "REQUIRED_FIELDS",
    "parse_record",
    "parse_json_line",
    "shard_of",
    "strictly_decreasing",
    "order_key",
    "qid_sort_key",
    "format_trec_line",
]

#: Fields every input row must have (``first_stage_score`` is optional).
REQUIRED_FIELDS = ("qid", "query", "docid", "text")

Parsed = tuple[str, str, str, str, float | None]


def _id(value: Any, name: str) -> tuple[str | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, f"field '{name}' must be a string or an integer, got {type(value).__name__}"
    s = str(value).strip()
    if not s:
        return None, f"field '{name}' is empty"
    if any(c.isspace() for c in s):
        return None, f"field '{name}' contains whitespace ({s[:40]!r}); TREC run files cannot hold it"
    return s, None


def _text(value: Any, name: str) -> tuple[str | None, str | None]:
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"field '{name}' is not valid UTF-8 (byte {exc.start}: {exc.reason})"
    if not isinstance(value, str):
        return None, f"field '{name}' must be a string, got {type(value).__name__}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return None, f"field '{name}' has invalid unicode at character {exc.start} ({exc.reason})"
    if not value.strip():
        return None, f"empty {name}"
    return value, None


def parse_record(obj: Any) -> tuple[Parsed | None, str | None]:
    """Validate one input row: ``((qid, query, docid, text, first_stage_score), None)`` or ``(None, reason)``."""
    if not isinstance(obj, Mapping):
        return None, f"row is not an object (got {type(obj).__name__})"
    missing = [f for f in REQUIRED_FIELDS if f not in obj or obj[f] is None]
    if missing:
        return None, "missing field " + ", ".join(repr(m) for m in missing)
    values: dict[str, str] = {}
    for name, check in (("qid", _id), ("docid", _id), ("query", _text), ("text", _text)):
        value, err = check(obj[name], name)
        if err:
            return None, err
        assert value is not None
        values[name] = value
    qid, docid, query, text = values["qid"], values["docid"], values["query"], values["text"]
    fss = obj.get("first_stage_score")
    if fss is not None:
        if isinstance(fss, bool) or not isinstance(fss, (int, float)) or not math.isfinite(float(fss)):
            return None, f"field 'first_stage_score' must be a finite number, got {fss!r}"
        fss = float(fss)
    return (qid, query, docid, text, fss), None


def parse_json_line(raw: bytes) -> tuple[Parsed | None, str | None, Any]:
    """Decode and validate one JSONL line; returns ``(parsed, error, obj)``."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"line is not valid UTF-8 (byte {exc.start}: {exc.reason})", None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at column {exc.colno}", None
    parsed, err = parse_record(obj)
    return parsed, err, obj


def shard_of(qid: str, num_shards: int) -> int:
    """The shard of a query: a stable hash (CRC-32 of the UTF-8 qid) modulo ``num_shards``.

    Stable across processes, machines and Python versions (unlike ``hash``), so a rerun puts every
    query in the same shard as before.
    """
    return zlib.crc32(qid.encode("utf-8")) % num_shards


def order_key(score: float, first_stage_score: float | None, docid: str) -> tuple[float, float, str]:
    """Sort key of a scored row: score descending, then first-stage score descending, then docid."""
    s = -math.inf if math.isnan(score) else score
    f = -math.inf if first_stage_score is None else first_stage_score
    return (-s, -f, docid)


def qid_sort_key(qid: str) -> tuple[int, int, str]:
    """Numeric qids in numeric order, then the rest alphabetically."""
    return (0, int(qid), "") if qid.isdigit() else (1, 0, qid)


def format_trec_line(qid: str, docid: str, rank: int, score: float, tag: str) -> str:
    return f"{qid} Q0 {docid} {rank} {score!r} {tag}\n"


def group_rows(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows by qid, in a deterministic order (docid, then text)."""
    by_qid: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_qid.setdefault(r["qid"], []).append(r)
    for rs in by_qid.values():
        rs.sort(key=lambda r: (r["docid"], r["text"]))
    return dict(sorted(by_qid.items(), key=lambda kv: qid_sort_key(kv[0])))
