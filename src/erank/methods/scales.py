"""ERank's prompt on the 0-3 scale (the paper's Table 1 ablation), registered as ``"erank-0-3"``.

>>> from erank import Reranker                                                   # doctest: +SKIP
>>> Reranker(method="erank-0-3").score("what is rust", ["Rust is a language."]).scores[0].label  # doctest: +SKIP
3
"""

from __future__ import annotations

from typing import Any, Literal

from erank.engines.base import Engine
from erank.methods.erank import ERankMethod

__all__ = ["ERank03Method"]


class ERank03Method(ERankMethod):
    """:class:`~erank.methods.erank.ERankMethod` with ``scale=3`` (template ``erank_0_3``)."""

    def __init__(
        self, engine: Engine, mode: Literal["direct", "reasoning"] = "direct", **kwargs: Any
    ) -> None:
        kwargs.setdefault("scale", 3)
        super().__init__(engine, mode, **kwargs)
