"""A stable key for a corpus (ids and texts), for on-disk caches."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def corpus_key(corpus: Mapping[str, str], *extra: object) -> str:
    h = hashlib.sha256()
    for e in extra:
        h.update(repr(e).encode())
        h.update(b"\x00")
    for docid, text in corpus.items():
        h.update(docid.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()[:20]
