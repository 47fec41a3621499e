"""erank: effective and efficient LLM reranking.

>>> from erank import Reranker, hybrid_scores   # doctest: +SKIP
"""

from __future__ import annotations

import logging

from erank.compat import ERank_Transformer, ERank_vLLM  # ERank_vLLM imports vllm only when used
from erank.errors import DataFormatError, ERankError, InputError, MissingExtraError, ModelLoadError
from erank.reranker import Reranker, load_reranker
from erank.scoring import hybrid_scores
from erank.types import Document, DocumentScore, RerankRequest, RerankResult, Usage

__version__ = "0.1.0"

__all__ = [
    "Reranker",
    "load_reranker",
    "hybrid_scores",
    "Document",
    "DocumentScore",
    "RerankRequest",
    "RerankResult",
    "Usage",
    "ERank_Transformer",
    "ERank_vLLM",
    "ERankError",
    "InputError",
    "ModelLoadError",
    "DataFormatError",
    "MissingExtraError",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
