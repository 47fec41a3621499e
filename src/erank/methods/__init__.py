"""Ranking methods: how prompts are made and how outputs become scores or orders.

Created by name through :func:`create_method`; imported lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

from erank.engines.base import Engine
from erank.errors import InputError
from erank.methods.base import Method

__all__ = ["METHODS", "Method", "create_method"]

#: name -> "module:Class"
METHODS: dict[str, str] = {
    "erank": "erank.methods.erank:ERankMethod",
    "erank-0-3": "erank.methods.scales:ERank03Method",
    "yesno": "erank.methods.yesno:YesNoMethod",
    "rank1": "erank.methods.yesno:Rank1Method",
    "listwise": "erank.methods.listwise:ListwiseMethod",
    "first": "erank.methods.first:FirstMethod",
    "pairwise": "erank.methods.pairwise:PairwiseMethod",
    "pairwise-allpairs": "erank.methods.pairwise:PairwiseAllPairsMethod",
    "setwise": "erank.methods.setwise:SetwiseMethod",
    "groupwise": "erank.methods.groupwise:GroupwiseMethod",
}


def create_method(name: str, engine: Engine, **kwargs: Any) -> Method:
    """Create the method ``name`` (see :data:`METHODS`) on ``engine``."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    module, cls = METHODS[name].split(":")
    method: Method = getattr(importlib.import_module(module), cls)(engine, **kwargs)
    return method
