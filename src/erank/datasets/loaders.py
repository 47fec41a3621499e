"""Load a whole collection from a folder (BEIR, TREC, TREC DL with candidate lists, BRIGHT, FollowIR).

>>> from erank.datasets import load_collection                       # doctest: +SKIP
>>> dl20 = load_collection("../shared/data/trec-dl20-passage")        # doctest: +SKIP
>>> run = load_candidates(dl20, "BM25")                               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from erank.datasets.formats import (
    check_qrels,
    read_beir_corpus,
    read_beir_queries,
    read_jsonl,
    read_qrels,
    read_run,
    read_topics,
    read_trec_docs,
)
from erank.datasets.rankllm import read_rankllm_candidates
from erank.datasets.types import Collection, LoadStats, Run
from erank.errors import DataFormatError, InputError
from erank.prompts import instruction_names

__all__ = ["load_collection", "load_beir", "load_trec", "load_bright", "load_followir", "load_candidates"]

logger = logging.getLogger(__name__)

# The BRIGHT tasks are the ones with a task instruction (prompts/instructions.yaml).
_BRIGHT_TASKS = {name.split("/", 1)[1] for name in instruction_names() if name.startswith("bright/")}


def _need(folder: Path, name: str, layout: str) -> Path:
    p = folder / name
    if not p.exists():
        raise DataFormatError(f"{folder} looks like a {layout} collection but has no {name}; add that file")
    return p


def load_beir(folder: str | Path, split: str = "test", *, beir_rule: bool = True) -> Collection:
    """A BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""
    folder = Path(folder)
    stats = LoadStats()
    corpus = read_beir_corpus(_need(folder, "corpus.jsonl", "BEIR"), stats)
    queries = read_beir_queries(_need(folder, "queries.jsonl", "BEIR"))
    qrels_path = _need(folder, f"qrels/{split}.tsv", "BEIR")
    qrels = read_qrels(qrels_path, stats)
    check_qrels(qrels, queries, corpus, stats, str(qrels_path))
    return Collection(
        name=folder.name,
        corpus=corpus,
        queries=queries,
        qrels={q: v for q, v in qrels.items() if q in queries},
        beir_rule=beir_rule,
        stats=stats,
        path=folder,
    )


def _find(folder: Path, patterns: list[str]) -> Path | None:
    for pat in patterns:
        hits = sorted(p for p in folder.glob(pat) if p.is_file())
        if hits:
            return hits[0]
    return None


def _find_docs(folder: Path) -> Path | None:
    for pat in ["doc*.trec", "corpus*.trec", "*.trec", "doc*.txt", "docs*"]:
        for p in sorted(folder.glob(pat)):
            if p.is_file() and not any(w in p.name.lower() for w in ("query", "topic", "qrel")):
                return p
    return None


def load_trec(
    folder: str | Path,
    *,
    docs: str | Path | None = None,
    topics: str | Path | None = None,
    qrels: str | Path | None = None,
) -> Collection:
    """A folder of TREC files: documents (``<DOC>`` SGML, optional), topics, qrels, candidate runs.

    Without a documents file (TREC DL passages), the corpus is filled from the texts of the candidate
    lists (``<run>/retrieve_results_*.json``) as they are loaded, and ``complete_corpus`` is False.
    Candidate lists are the sub-folders holding ``retrieve_results_*.json`` or ``trec_results_*.txt``.
    """
    folder = Path(folder)
    stats = LoadStats()
    docs_p = Path(docs) if docs else _find_docs(folder)
    topics_p = Path(topics) if topics else _find(folder, ["topics*", "query*", "queries*"])
    qrels_p = Path(qrels) if qrels else _find(folder, ["qrels*"])
    if topics_p is None:
        raise DataFormatError(f"{folder}: no topics file (expected topics*.txt, query-text.trec or queries*)")
    if qrels_p is None:
        raise DataFormatError(f"{folder}: no qrels file (expected qrels*)")
    queries = read_topics(topics_p)
    qrels_d = read_qrels(qrels_p, stats)
    corpus = read_trec_docs(docs_p, stats) if docs_p else {}
    check_qrels(qrels_d, queries, corpus if docs_p else None, stats, str(qrels_p))
    cand: dict[str, Path] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        f = _find(sub, ["retrieve_results_*.json", "trec_results_*.txt", "*.run", "run*.txt"])
        if f is not None:
            cand[sub.name] = f
    for f in sorted(folder.glob("retrieve_results_*.json")) + sorted(folder.glob("*.run")):
        cand.setdefault(f.stem, f)
    name = folder.name
    dl = "dl" in name.lower() or "msmarco" in name.lower()
    return Collection(
        name=name,
        corpus=corpus,
        queries=queries,
        qrels={q: v for q, v in qrels_d.items() if q in queries},
        candidate_files=cand,
        complete_corpus=docs_p is not None,
        relevance_level=2 if dl else 1,
        instruction="trec-dl" if dl else "beir",
        stats=stats,
        path=folder,
    )


def _records_by_id(path: Path, what: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(line number, id, object)`` of every record of a BRIGHT JSONL file; a record without an
    ``id``, or with one seen before, is an error."""
    seen: set[str] = set()
    for lineno, obj in read_jsonl(path):
        key = str(obj.get("id", "")).strip()
        if not key:
            raise DataFormatError(f"{path}:{lineno}: {what} without an 'id'")
        if key in seen:
            raise DataFormatError(f"{path}:{lineno}: duplicate id {key!r}")
        seen.add(key)
        yield lineno, key, obj


def load_bright(folder: str | Path, task: str | None = None) -> Collection:
    """BRIGHT, one task: ``documents.jsonl`` (``id``, ``content``) and ``examples.jsonl``
    (``id``, ``query``, ``gold_ids``, ``excluded_ids``), as the authors publish them per task.

    Also accepted: ``documents/<task>.jsonl`` and ``examples/<task>.jsonl``. ``excluded_ids`` of
    each example are removed from every run before evaluation; ``"N/A"`` entries are ignored.
    """
    folder = Path(folder)
    task = task or (folder.name if folder.name in _BRIGHT_TASKS else None)
    docs_p = folder / "documents.jsonl"
    ex_p = folder / "examples.jsonl"
    if task and not docs_p.exists():
        docs_p, ex_p = folder / "documents" / f"{task}.jsonl", folder / "examples" / f"{task}.jsonl"
    for p in (docs_p, ex_p):
        if not p.exists():
            raise DataFormatError(
                f"{folder} looks like a BRIGHT collection but has no {p.relative_to(folder)}"
            )
    stats = LoadStats()
    corpus: dict[str, str] = {}
    empty = 0
    for _, did, obj in _records_by_id(docs_p, "document"):
        text = str(obj.get("content", "")).strip()
        empty += not text
        corpus[did] = text
    stats.empty_documents = empty
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    excluded: dict[str, set[str]] = {}
    for lineno, qid, obj in _records_by_id(ex_p, "example"):
        text = " ".join(str(obj.get("query", "")).split())
        if not text:
            raise DataFormatError(f"{ex_p}:{lineno}: example {qid!r} has an empty query")
        queries[qid] = text
        qrels[qid] = {str(d): 1 for d in obj.get("gold_ids", [])}
        excluded[qid] = {str(d) for d in obj.get("excluded_ids", []) if str(d) != "N/A"}
        overlap = excluded[qid] & set(qrels[qid])
        if overlap:
            raise DataFormatError(
                f"{ex_p}:{lineno}: example {qid!r} lists {sorted(overlap)} as both gold and excluded"
            )
    check_qrels(qrels, queries, corpus, stats, str(ex_p))
    return Collection(
        name=f"bright/{task}" if task else folder.name,
        corpus=corpus,
        queries=queries,
        qrels={q: v for q, v in qrels.items() if v},
        excluded_ids=excluded,
        instruction=f"bright/{task}" if task else "bright/biology",
        stats=stats,
        path=folder,
    )


def load_followir(folder: str | Path) -> Collection:
    """FollowIR: ``corpus.jsonl``, ``queries.jsonl`` (``_id``, ``text``, ``instruction_og``,
    ``instruction_changed``), ``qrels/og.tsv``, ``qrels/changed.tsv`` and optionally
    ``top_ranked.jsonl`` (``{"qid": .., "doc_ids": [..]}``, the benchmark's candidates).

    Returns the original-instruction collection; ``.changed`` holds the changed one. The per-query
    instruction goes into the query text (spec 2.6).
    """
    folder = Path(folder)
    stats = LoadStats()
    corpus = read_beir_corpus(_need(folder, "corpus.jsonl", "FollowIR"), stats)
    q_path = _need(folder, "queries.jsonl", "FollowIR")
    og_q: dict[str, str] = {}
    ch_q: dict[str, str] = {}
    for lineno, obj in read_jsonl(q_path):
        qid = str(obj.get("_id", obj.get("query-id", ""))).strip()
        text = " ".join(str(obj.get("text", obj.get("query", ""))).split())
        if not qid or not text:
            raise DataFormatError(f"{q_path}:{lineno}: query without an id or text")
        if qid in og_q:
            raise DataFormatError(f"{q_path}:{lineno}: duplicate id {qid!r}")
        og = obj.get("instruction_og")
        ch = obj.get("instruction_changed")
        if not isinstance(og, str) or not isinstance(ch, str):
            raise DataFormatError(
                f"{q_path}:{lineno}: query {qid!r} needs 'instruction_og' and 'instruction_changed'"
            )
        og_q[qid] = f"{text} {og.strip()}".strip()
        ch_q[qid] = f"{text} {ch.strip()}".strip()
    og_qrels = read_qrels(_need(folder, "qrels/og.tsv", "FollowIR"), stats)
    ch_qrels = read_qrels(_need(folder, "qrels/changed.tsv", "FollowIR"), stats)
    check_qrels(og_qrels, og_q, corpus, stats, "qrels/og.tsv")
    cand: dict[str, Path] = {}
    if (folder / "top_ranked.jsonl").exists():
        cand["top_ranked"] = folder / "top_ranked.jsonl"
    common: dict[str, Any] = {"corpus": corpus, "candidate_files": cand, "instruction": "followir"}
    changed = Collection(
        name=f"{folder.name}/changed",
        queries=ch_q,
        qrels={q: v for q, v in ch_qrels.items() if q in ch_q},
        stats=stats,
        path=folder,
        **common,
    )
    return Collection(
        name=folder.name,
        queries=og_q,
        qrels={q: v for q, v in og_qrels.items() if q in og_q},
        changed=changed,
        stats=stats,
        path=folder,
        **common,
    )


def load_collection(
    data: str | os.PathLike[str], split: str = "test", *, beir_rule: bool | None = None
) -> Collection:
    """Load a collection from a folder (layout detected) or, online, by name (``beir/scifact``...).

    Layouts: BEIR (``corpus.jsonl``), FollowIR (BEIR plus ``instruction_og`` in the queries), BRIGHT
    (``documents.jsonl`` + ``examples.jsonl``), TREC (topics, qrels, optional ``<DOC>`` documents and
    candidate-list sub-folders).

    >>> c = load_collection("../shared/data/cranfield")               # doctest: +SKIP
    >>> len(c.judged_queries)                                         # doctest: +SKIP
    225
    """
    path = Path(data).expanduser()
    if not path.exists():
        text = str(data)
        if "/" in text and not text.startswith((".", "/", "~")) and text.count("/") == 1:
            from erank.datasets.online import load_by_name

            return load_by_name(text, split)
        raise InputError(
            f"collection {text!r} not found: pass a folder (BEIR, TREC, BRIGHT, FollowIR layout) or a name"
        )
    if path.is_file():
        raise InputError(
            f"{path} is a file; pass the collection folder (a candidate file goes to --first-stage)"
        )
    if (path / "corpus.jsonl").exists() or (path / "queries.jsonl").exists():
        q = path / "queries.jsonl"
        if q.exists():
            with open(q, encoding="utf-8") as fh:
                first = fh.readline()
            if "instruction_og" in first:
                return load_followir(path)
        return load_beir(path, split, beir_rule=True if beir_rule is None else beir_rule)
    if (
        (path / "documents.jsonl").exists()
        or (path / "examples.jsonl").exists()
        or (path / "documents").is_dir()
    ):
        return load_bright(path)
    if any(path.glob("qrels*")) or any(path.glob("topics*")) or any(path.glob("query*")):
        coll = load_trec(path)
        if beir_rule:
            coll.beir_rule = True
        return coll
    raise DataFormatError(
        f"{path}: not a known collection layout; expected corpus.jsonl + queries.jsonl + qrels/{split}.tsv (BEIR), "
        "documents.jsonl + examples.jsonl (BRIGHT), or topics + qrels files (TREC)"
    )


def load_candidates(collection: Collection, source: str | os.PathLike[str]) -> Run:
    """A first-stage candidate list: a shipped one by name (``"BM25"``) or a file (run or rank_llm JSON).

    Texts from a rank_llm JSON are added to ``collection.corpus`` (where a document is missing), so
    rerankers can read them. Queries of the candidate list that the collection lacks are added too.
    """
    name = str(source)
    if name in collection.candidate_files:
        path = collection.candidate_files[name]
    else:
        matches = [k for k in collection.candidate_files if k.lower() == name.lower()]
        path = collection.candidate_files[matches[0]] if matches else Path(name).expanduser()
    if not path.exists():
        avail = ", ".join(sorted(collection.candidate_files)) or "none"
        raise InputError(
            f"first stage {name!r} is neither a file nor a shipped candidate list (shipped: {avail})"
        )
    if path.suffix == ".json":
        queries, run = read_rankllm_candidates(path)
        for qid, text in queries.items():
            collection.queries.setdefault(qid, text)
        for cands in run.values():
            for c in cands:
                if c.text is not None:
                    collection.corpus.setdefault(c.docid, c.text)
        return run
    if path.suffix == ".jsonl":  # FollowIR top_ranked
        run = {}
        for lineno, obj in read_jsonl(path):
            qid = str(obj.get("qid", obj.get("query-id", ""))).strip()
            ids = obj.get("doc_ids", obj.get("corpus-ids"))
            if not qid or not isinstance(ids, list):
                raise DataFormatError(f"{path}:{lineno}: expected {{'qid': .., 'doc_ids': [..]}}")
            run[qid] = [_cand(str(d), len(ids) - i) for i, d in enumerate(ids)]
        return run
    run = read_run(path)
    missing = sum(1 for cs in run.values() for c in cs if c.docid not in collection.corpus)
    if missing:
        logger.warning(
            "%s: %d candidate document(s) have no text in the collection; rerankers will see an empty text",
            path,
            missing,
        )
    return run


def _cand(docid: str, score: float):  # noqa: ANN202
    from erank.datasets.types import Candidate

    return Candidate(docid, float(score))
