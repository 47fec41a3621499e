"""BM25 through ``bm25s``, with the index built once and cached on disk, keyed by the corpus."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from erank.datasets.types import Candidate, Run
from erank.errors import InputError, require
from erank.models import cache_dir
from erank.retrieval._key import corpus_key

__all__ = ["BM25Retriever"]

logger = logging.getLogger(__name__)


class BM25Retriever:
    """BM25 (Lucene variant) over ``corpus`` (``{docid: text}``).

    Defaults are Anserini's (``k1=0.9``, ``b=0.4``), English stop words removed, Porter-style
    (Snowball English) stemming when ``PyStemmer`` is installed. The index is saved under
    ``cache_dir()/bm25/<key>`` where the key hashes the corpus and the settings; a second
    retriever over the same corpus loads it instead of indexing again.

    >>> r = BM25Retriever({"d1": "the cat sat", "d2": "dogs bark loudly"}, cache=False)
    >>> [c.docid for c in r.retrieve({"q": "barking dog"}, k=1)["q"]]
    ['d2']
    """

    def __init__(
        self,
        corpus: Mapping[str, str],
        *,
        k1: float = 0.9,
        b: float = 0.4,
        stemmer: str | None = "english",
        stopwords: str | None = "en",
        cache: bool = True,
    ) -> None:
        bm25s: Any = require("bm25s", "eval", "BM25 retrieval")
        self.bm25s: Any = bm25s
        if not corpus:
            raise InputError("the corpus is empty: BM25 needs documents to index")
        self.ids = list(corpus)
        self.k1, self.b = k1, b
        self.stopwords = stopwords
        self._stemmer: Any = None
        if stemmer:
            try:
                import Stemmer  # type: ignore[import-not-found]

                self._stemmer = Stemmer.Stemmer(stemmer)
            except ImportError:
                logger.warning(
                    "PyStemmer is not installed: BM25 runs without stemming (pip install PyStemmer)"
                )
        stem_name = stemmer if self._stemmer is not None else None
        self.key = corpus_key(corpus, "bm25s", k1, b, stem_name, stopwords, self.bm25s.__version__)
        self.index_dir = cache_dir() / "bm25" / self.key
        self.loaded_from_cache = False
        if cache and (self.index_dir / ".complete").exists():
            self.model = self.bm25s.BM25.load(str(self.index_dir))
            self.loaded_from_cache = True
            logger.info("BM25 index loaded from %s", self.index_dir)
        else:
            self.model = self.bm25s.BM25(k1=k1, b=b, method="lucene")
            tokens = self._tokenize(list(corpus.values()))
            self.model.index(tokens, show_progress=False)
            if cache:
                self._save()

    def _tokenize(self, texts: list[str]) -> Any:
        return self.bm25s.tokenize(
            texts, stopwords=self.stopwords, stemmer=self._stemmer, return_ids=False, show_progress=False
        )

    def _save(self) -> None:
        tmp = self.index_dir.with_name(self.index_dir.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save(str(tmp))
        (tmp / "erank.json").write_text(json.dumps({"documents": len(self.ids), "k1": self.k1, "b": self.b}))
        (tmp / ".complete").write_text("ok")
        try:
            tmp.rename(self.index_dir)
        except OSError:  # another process saved it first
            shutil.rmtree(tmp, ignore_errors=True)

    def retrieve(self, queries: Mapping[str, str], k: int = 100) -> Run:
        """The top ``k`` documents per query, as ``{qid: [Candidate]}`` (scores descending).

        Documents with score 0 (no query term) are left out.
        """
        if k <= 0:
            raise InputError(f"k must be positive, got {k}")
        qids = list(queries)
        if not qids:
            return {}
        k_eff = min(k, len(self.ids))
        tokens = self._tokenize([queries[q] for q in qids])
        docs, scores = self.model.retrieve(tokens, k=k_eff, show_progress=False, n_threads=0)
        run: Run = {}
        for i, qid in enumerate(qids):
            run[qid] = [
                Candidate(self.ids[int(d)], float(s))
                for d, s in zip(docs[i], scores[i], strict=True)
                if float(s) > 0.0
            ]
        return run

    def cache_path(self) -> Path:
        return self.index_dir
