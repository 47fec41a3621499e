"""Readers and writers for the file formats of the field: BEIR JSONL/TSV, TREC (rank_llm JSON:
:mod:`erank.datasets.rankllm`).

Every reader names the file and the line of a malformed record (:class:`~erank.errors.DataFormatError`).
Tolerated oddities (qrels naming unknown queries or documents, empty documents) are logged as
warnings and counted in :class:`~erank.datasets.types.LoadStats`.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "run.txt"
>>> write_run({"q1": [Candidate("d1", 2.0), Candidate("d2", 2.0)]}, p, tag="bm25")
>>> [c.docid for c in read_run(p)["q1"]]
['d1', 'd2']
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from erank.datasets.types import Candidate, LoadStats, Qrels, Run
from erank.errors import DataFormatError

__all__ = [
    "read_json",
    "read_jsonl",
    "read_beir_corpus",
    "read_beir_queries",
    "read_qrels",
    "read_trec_docs",
    "read_topics",
    "read_run",
    "write_run",
    "strictly_decreasing",
    "check_qrels",
]

logger = logging.getLogger(__name__)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataFormatError(f"file not found: {path}")


def _open_lines(path: Path) -> Iterator[tuple[int, str]]:
    _check_exists(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            yield lineno, line.rstrip("\n").rstrip("\r")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSONL file."""
    path = Path(path)
    for lineno, line in _open_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def read_json(path: str | Path) -> Any:
    """The value of a whole JSON file (a missing file or invalid JSON names the file and line)."""
    path = Path(path)
    _check_exists(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc


def _id(obj: Mapping[str, Any], keys: Sequence[str], path: Path, lineno: int) -> str:
    for k in keys:
        if k in obj and obj[k] is not None:
            value = str(obj[k]).strip()
            if not value:
                raise DataFormatError(f"{path}:{lineno}: empty {k!r}")
            return value
    raise DataFormatError(f"{path}:{lineno}: no id field (expected one of {list(keys)})")


def _put_unique(
    store: dict[str, Any], seen: dict[str, int], key: str, value: Any, path: Path, lineno: int
) -> None:
    if key in store:
        raise DataFormatError(f"{path}:{lineno}: duplicate id {key!r} (first on line {seen[key]})")
    store[key] = value
    seen[key] = lineno


def read_beir_corpus(path: str | Path, stats: LoadStats | None = None) -> dict[str, str]:
    """BEIR ``corpus.jsonl`` -> ``{docid: title + " " + text}`` (stripped; empty kept with a warning)."""
    path = Path(path)
    corpus: dict[str, str] = {}
    seen: dict[str, int] = {}
    empty: list[str] = []
    for lineno, obj in read_jsonl(path):
        docid = _id(obj, ("_id", "id", "docid", "doc_id"), path, lineno)
        title = obj.get("title") or ""
        text = obj.get("text")
        if text is None:
            text = obj.get("contents", obj.get("content", ""))
        if not isinstance(title, str) or not isinstance(text, str):
            raise DataFormatError(f"{path}:{lineno}: 'title' and 'text' must be strings")
        body = f"{title} {text}".strip()
        if not body:
            empty.append(docid)
        _put_unique(corpus, seen, docid, body, path, lineno)
    if empty:
        logger.warning("%s: %d document(s) have no text (kept, e.g. %s)", path, len(empty), empty[:5])
        if stats is not None:
            stats.empty_documents += len(empty)
    return corpus


def check_query(qid: str, text: Any, path: Path, lineno: int) -> str:
    if not isinstance(text, str):
        raise DataFormatError(f"{path}:{lineno}: query {qid!r} has no text string")
    text = " ".join(text.split())
    if not text:
        raise DataFormatError(f"{path}:{lineno}: query {qid!r} has empty text; give it a text or remove it")
    return text


def read_beir_queries(path: str | Path) -> dict[str, str]:
    """BEIR ``queries.jsonl`` -> ``{qid: text}``."""
    path = Path(path)
    queries: dict[str, str] = {}
    seen: dict[str, int] = {}
    for lineno, obj in read_jsonl(path):
        qid = _id(obj, ("_id", "id", "qid", "query_id", "query-id"), path, lineno)
        text = check_query(qid, obj.get("text", obj.get("query")), path, lineno)
        _put_unique(queries, seen, qid, text, path, lineno)
    return queries


def read_qrels(path: str | Path, stats: LoadStats | None = None) -> Qrels:
    """Qrels: BEIR TSV (``query-id corpus-id score``, header optional) or TREC (``qid 0 docid grade``).

    Columns are split on whitespace. A pair judged twice with the same grade is kept once (warning);
    with different grades it is an error.
    """
    path = Path(path)
    qrels: Qrels = {}
    where: dict[tuple[str, str], int] = {}
    dups = 0
    for lineno, line in _open_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if lineno == 1 and parts and parts[0].lower() in ("query-id", "query_id", "qid", "queryid"):
            continue  # header
        if len(parts) == 3:
            qid, docid, grade_s = parts
        elif len(parts) == 4:
            qid, _, docid, grade_s = parts
        else:
            raise DataFormatError(
                f"{path}:{lineno}: qrels line has {len(parts)} columns; expected 3 (query-id corpus-id score) "
                f"or 4 (qid 0 docid grade)"
            )
        try:
            grade = int(float(grade_s))
        except ValueError as exc:
            raise DataFormatError(f"{path}:{lineno}: relevance grade {grade_s!r} is not a number") from exc
        key = (qid, docid)
        if key in where:
            if qrels[qid][docid] != grade:
                raise DataFormatError(
                    f"{path}:{lineno}: pair ({qid}, {docid}) judged again with grade {grade} "
                    f"(grade {qrels[qid][docid]} on line {where[key]})"
                )
            dups += 1
            continue
        where[key] = lineno
        qrels.setdefault(qid, {})[docid] = grade
    if dups:
        logger.warning("%s: %d duplicate judgement(s) with the same grade ignored", path, dups)
        if stats is not None:
            stats.duplicate_qrels += dups
    if not qrels:
        raise DataFormatError(f"{path}: no judgements found")
    return qrels


def check_qrels(
    qrels: Qrels,
    queries: Mapping[str, str],
    corpus: Mapping[str, str] | None,
    stats: LoadStats,
    source: str = "",
) -> None:
    """Warn about and count qrels naming unknown queries (or documents, when ``corpus`` is complete)."""
    unknown_q = [q for q in qrels if q not in queries]
    if unknown_q:
        stats.unknown_qrels_queries += len(unknown_q)
        logger.warning(
            "%sjudgements for %d unknown query id(s) are ignored for evaluation (e.g. %s)",
            f"{source}: " if source else "",
            len(unknown_q),
            unknown_q[:5],
        )
    if corpus is not None:
        n = 0
        example: list[tuple[str, str]] = []
        for q, docs in qrels.items():
            for d in docs:
                if d not in corpus:
                    n += 1
                    if len(example) < 5:
                        example.append((q, d))
        if n:
            stats.unknown_qrels_documents += n
            logger.warning(
                "%s%d judgement(s) name documents that are not in the corpus (e.g. %s); they count as unretrieved",
                f"{source}: " if source else "",
                n,
                example,
            )


_DOC = re.compile(r"<DOC>(.*?)</DOC>", re.S | re.I)
_DOCNO = re.compile(r"<DOCNO>\s*(.*?)\s*</DOCNO>", re.S | re.I)
_TAG = re.compile(r"<[^>]+>")


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataFormatError(f"file not found: {path}")
    return path.read_text(encoding="utf-8", errors="replace")


def _sgml_records(pattern: re.Pattern[str], raw: str) -> Iterator[tuple[int, str]]:
    """``(line number, inner text)`` of every ``pattern`` record (``<DOC>``, ``<top>``) of ``raw``."""
    lineno, pos = 1, 0
    for m in pattern.finditer(raw):
        lineno += raw.count("\n", pos, m.start())
        pos = m.start()
        yield lineno, m.group(1)


def read_trec_docs(path: str | Path, stats: LoadStats | None = None) -> dict[str, str]:
    """SGML-style TREC documents ``<DOC><DOCNO>id</DOCNO> text </DOC>`` -> ``{docid: text}``.

    Text is everything but the DOCNO element, with other tags removed and whitespace collapsed.
    """
    path = Path(path)
    corpus: dict[str, str] = {}
    seen: dict[str, int] = {}
    empty: list[str] = []
    for lineno, body in _sgml_records(_DOC, _read_text(path)):
        dm = _DOCNO.search(body)
        if dm is None:
            raise DataFormatError(f"{path}:{lineno}: <DOC> without <DOCNO>")
        docid = dm.group(1).strip()
        text = " ".join(_TAG.sub(" ", body[: dm.start()] + body[dm.end() :]).split())
        if not text:
            empty.append(docid)
        _put_unique(corpus, seen, docid, text, path, lineno)
    if not corpus:
        raise DataFormatError(f"{path}: no <DOC><DOCNO>...</DOCNO>...</DOC> records found")
    if empty:
        logger.warning("%s: %d document(s) have no text (kept, e.g. %s)", path, len(empty), empty[:5])
        if stats is not None:
            stats.empty_documents += len(empty)
    return corpus


_TOP = re.compile(r"<top>(.*?)</top>", re.S | re.I)
_NUM = re.compile(r"<num>\s*(?:Number:)?\s*([^<\s]+)", re.I)
_TITLE = re.compile(r"<title>\s*(?:Topic:)?(.*?)(?=<(?!/?title)|</title>|$)", re.S | re.I)


def read_topics(path: str | Path) -> dict[str, str]:
    """Topics: plain ``qid<TAB>text`` lines, or SGML ``<top><num>..</num><title>..</title></top>``."""
    path = Path(path)
    raw = _read_text(path)
    queries: dict[str, str] = {}
    seen: dict[str, int] = {}
    if "<top>" in raw.lower():
        for lineno, body in _sgml_records(_TOP, raw):
            nm = _NUM.search(body)
            tm = _TITLE.search(body)
            if nm is None or tm is None:
                raise DataFormatError(f"{path}:{lineno}: <top> without <num> or <title>")
            qid = nm.group(1).strip()
            text = check_query(qid, _TAG.sub(" ", tm.group(1)), path, lineno)
            _put_unique(queries, seen, qid, text, path, lineno)
    else:
        for lineno, line in _open_lines(path):
            if not line.strip():
                continue
            if "\t" not in line:
                raise DataFormatError(f"{path}:{lineno}: expected 'qid<TAB>text'")
            qid, text = line.split("\t", 1)
            qid = qid.strip()
            _put_unique(queries, seen, qid, check_query(qid, text, path, lineno), path, lineno)
    if not queries:
        raise DataFormatError(f"{path}: no topics found")
    return queries


def read_run(path: str | Path) -> Run:
    """A TREC run ``qid Q0 docid rank score tag`` -> ``{qid: [Candidate]}`` sorted by score (desc).

    Ties in score keep the file's rank order. A line without exactly 6 columns is an error that
    names the line.
    """
    path = Path(path)
    rows: dict[str, list[tuple[float, int, str]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for lineno, line in _open_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise DataFormatError(
                f"{path}:{lineno}: run line has {len(parts)} columns; expected 6 (qid Q0 docid rank score tag)"
            )
        qid, _, docid, rank_s, score_s, _tag = parts
        try:
            rank = int(rank_s)
            score = float(score_s)
        except ValueError as exc:
            raise DataFormatError(
                f"{path}:{lineno}: rank {rank_s!r} or score {score_s!r} is not a number"
            ) from exc
        if not math.isfinite(score):
            raise DataFormatError(f"{path}:{lineno}: score {score_s!r} is not finite")
        if (qid, docid) in seen:
            raise DataFormatError(
                f"{path}:{lineno}: document {docid!r} appears twice for query {qid!r} (first on line {seen[(qid, docid)]})"
            )
        seen[(qid, docid)] = lineno
        rows.setdefault(qid, []).append((score, rank, docid))
    if not rows:
        raise DataFormatError(f"{path}: empty run file")
    run: Run = {}
    for qid, items in rows.items():
        items.sort(key=lambda t: (-t[0], t[1]))
        run[qid] = [Candidate(docid, score) for score, _, docid in items]
    return run


#: Where non-finite scores are put before the gaps are applied: far outside any model's range,
#: with room below for ~10^7 nudged scores before float32 overflows.
_SCORE_LIMIT = 1e30


def strictly_decreasing(scores: Sequence[float]) -> list[float]:
    """Scores in rank order made strictly decreasing, changing only those that tie or come too close.

    trec_eval (and pytrec_eval) compare scores in single precision and break ties by docid, so two
    scores closer than float32 can tell apart would be re-ordered. Every score is kept at least a
    relative 1e-6 (about 8 float32 steps; absolute 1e-12 near zero) below the previous one, so the
    given order is the order every tool evaluates, read as float32 or float64. NaN counts as the
    lowest score; infinities become +-1e30 (a run file has no tie-free way to write them). The
    one home of this rule: evaluation, :func:`write_run` and batch run files all use it.

    >>> strictly_decreasing([3.0, 3.0, 1.0])
    [3.0, 2.999997, 1.0]
    """
    out: list[float] = []
    for s in scores:
        s = -_SCORE_LIMIT if math.isnan(s) else min(max(float(s), -_SCORE_LIMIT), _SCORE_LIMIT)
        if out:
            prev = out[-1]
            step = max(abs(prev) * 1e-6, 1e-12)
            if s > prev - step:
                s = prev - step
        out.append(s)
    return out


def write_run(run: Mapping[str, Sequence[Candidate]], path: str | Path, tag: str = "erank") -> None:
    """Write a TREC run with ranks 1..n and strictly decreasing scores (given order preserved)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = "".join(tag.split()) or "erank"
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for qid, cands in run.items():
            scores = strictly_decreasing([c.score for c in cands])
            for rank, (c, s) in enumerate(zip(cands, scores, strict=True), start=1):
                fh.write(f"{qid} Q0 {c.docid} {rank} {s!r} {tag}\n")
    tmp.replace(path)
