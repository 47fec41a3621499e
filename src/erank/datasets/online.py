"""Loading a collection by name when the machine is online (kept thin: the local loaders do the work).

``beir/<name>`` and ``bright/<task>`` and ``followir/<name>`` go through the ``datasets`` library
(the authors' Hugging Face copies); ``msmarco-passage/...`` and other ``ir_datasets`` ids through
``ir_datasets``. Offline, a clear error names the local-file alternative.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from erank.datasets.types import Collection
from erank.errors import InputError, require

__all__ = ["load_by_name"]

logger = logging.getLogger(__name__)

_HF = {"beir": "BeIR/{name}", "bright": "xlangai/BRIGHT", "followir": "jhu-clsp/{name}-instructions"}


def _offline_error(name: str, exc: Exception | None = None) -> InputError:
    return InputError(
        f"cannot load the collection {name!r} by name: {exc or 'the machine is offline (HF_HUB_OFFLINE=1)'}. "
        "Download it where you are online and pass the folder instead: a BEIR folder (corpus.jsonl, "
        "queries.jsonl, qrels/test.tsv), a BRIGHT task folder (documents.jsonl, examples.jsonl), a FollowIR "
        "folder (corpus.jsonl, queries.jsonl with instruction_og/instruction_changed, qrels/og.tsv, "
        "qrels/changed.tsv) or a TREC folder (topics, qrels, candidate lists). See docs/evaluation.md."
    )


def _write_jsonl(path: Path, rows: object) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:  # type: ignore[attr-defined]
            fh.write(json.dumps(dict(r), ensure_ascii=False) + "\n")


def load_by_name(name: str, split: str = "test") -> Collection:
    """Download ``family/name`` into a local folder of the matching layout, then load that folder."""
    from erank.datasets.loaders import load_beir, load_bright, load_trec
    from erank.models import cache_dir

    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("ERANK_OFFLINE") == "1":
        raise _offline_error(name)
    family, _, sub = name.partition("/")
    target = cache_dir() / "collections" / name.replace("/", "__")
    try:
        if family == "beir":
            ds = require("datasets", "train", "loading BEIR by name")
            if not (target / "corpus.jsonl").exists():
                corpus = ds.load_dataset(_HF["beir"].format(name=sub), "corpus")["corpus"]  # type: ignore[attr-defined]
                queries = ds.load_dataset(_HF["beir"].format(name=sub), "queries")["queries"]  # type: ignore[attr-defined]
                qrels = ds.load_dataset(f"BeIR/{sub}-qrels")[split]  # type: ignore[attr-defined]
                _write_jsonl(target / "corpus.jsonl", corpus)
                _write_jsonl(target / "queries.jsonl", queries)
                (target / "qrels").mkdir(parents=True, exist_ok=True)
                with open(target / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as fh:
                    fh.write("query-id\tcorpus-id\tscore\n")
                    for r in qrels:
                        fh.write(f"{r['query-id']}\t{r['corpus-id']}\t{r['score']}\n")
            return load_beir(target, split)
        if family == "bright":
            ds = require("datasets", "train", "loading BRIGHT by name")
            if not (target / "documents.jsonl").exists():
                docs = ds.load_dataset(_HF["bright"], "documents")[sub]  # type: ignore[attr-defined]
                examples = ds.load_dataset(_HF["bright"], "examples")[sub]  # type: ignore[attr-defined]
                _write_jsonl(target / "documents.jsonl", docs)
                _write_jsonl(target / "examples.jsonl", examples)
            return load_bright(target, sub)
        if family == "followir":
            raise _offline_error(name, RuntimeError("FollowIR by name is not wired; use the local layout"))
        ird = require("ir_datasets", "eval", "loading ir_datasets collections by name")
        dataset = ird.load(name)  # type: ignore[attr-defined]
        tmp = Path(tempfile.mkdtemp(prefix="erank-ird-"))
        with open(tmp / "topics.tsv", "w", encoding="utf-8") as fh:
            for q in dataset.queries_iter():
                fh.write(f"{q.query_id}\t{q.text}\n")
        with open(tmp / "qrels.txt", "w", encoding="utf-8") as fh:
            for r in dataset.qrels_iter():
                fh.write(f"{r.query_id} 0 {r.doc_id} {r.relevance}\n")
        return load_trec(tmp)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - network and hub errors of several libraries
        raise _offline_error(name, exc) from exc
