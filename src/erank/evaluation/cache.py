"""A score cache that makes long evaluations resumable.

Scores are stored in SQLite (one row per document, committed as each chunk finishes), keyed by
what determines a score: the reranker's identity (model, method, mode, prompt template and
settings), the instruction, the truncation length, the query and the document text. A run that is
killed and started again finds every finished chunk and recomputes none of it.

>>> import tempfile, pathlib
>>> c = ScoreCache(pathlib.Path(tempfile.mkdtemp()) / "scores.sqlite")
>>> k = c.key({"model": "m"}, "instr", 2048, "query", "doc text")
>>> c.put_many([(k, 3.5, 0.1)]); c.get_many([k])[k]
(3.5, 0.1)
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from erank.types import Scorer

__all__ = ["ScoreCache", "reranker_identity"]

logger = logging.getLogger(__name__)


def reranker_identity(reranker: Scorer) -> dict[str, Any]:
    """What about a reranker determines its scores: model, engine, method, mode, every argument.

    Uses ``reranker.identity()`` (:meth:`erank.Reranker.identity`, built from the constructor
    arguments of its method), or ``reranker.cache_identity()``, or the identity of its ``method``.
    Any other object is known by its class and name only, so two configurations of it would share
    cached scores: give such a scorer an ``identity()`` method.
    """
    for attr in ("identity", "cache_identity"):
        fn = getattr(reranker, attr, None)
        if callable(fn):
            return dict(fn())
    method = getattr(reranker, "method", None)
    if method is not None and callable(getattr(method, "identity", None)):
        return {"class": type(reranker).__name__, **method.identity()}
    logger.warning(
        "%s has no identity(); cached scores are keyed by its class and name only",
        type(reranker).__name__,
    )
    ident: dict[str, Any] = {"class": type(reranker).__name__}
    for attr in ("model_name", "mode", "name"):
        v = getattr(reranker, attr, None)
        if isinstance(v, (str, int, float)):
            ident[attr] = v
    return ident


class ScoreCache:
    """Document scores on disk (SQLite), safe to reopen after a crash or a kill."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=60)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL, seconds REAL)"
        )
        self.conn.commit()

    @staticmethod
    def key(
        identity: Mapping[str, Any],
        instruction: str,
        truncate_length: int | None,
        query: str,
        document: str,
        context: str = "",
    ) -> str:
        """A stable key; ``context`` distinguishes scores that depend on the other documents (listwise)."""
        h = hashlib.sha256()
        h.update(json.dumps(identity, sort_keys=True, default=str).encode())
        for part in (instruction, str(truncate_length), query, document, context):
            h.update(b"\x00")
            h.update(part.encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i : i + 500])
            marks = ",".join("?" * len(chunk))
            for k, s, sec in self.conn.execute(
                f"SELECT key, score, seconds FROM scores WHERE key IN ({marks})", chunk
            ):
                out[k] = (float(s), float(sec))
        return out

    def put_many(self, rows: Iterable[tuple[str, float, float]]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO scores (key, score, seconds) VALUES (?, ?, ?)", list(rows)
            )

    def __len__(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        self.conn.close()
