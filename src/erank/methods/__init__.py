"""Ranking methods: how prompts are made and how outputs become scores or orders.

Created by name through :func:`create_method`; imported lazily.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from erank.engines.base import Engine
from erank.errors import InputError
from erank.methods.base import Method

__all__ = ["METHODS", "Method", "create_method", "method_class", "method_arguments", "check_method_kwargs"]

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


def method_class(name: str) -> type[Method]:
    """The class of the method ``name``, imported without building it (no engine, no model)."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    module, cls = METHODS[name].split(":")
    found: type[Method] = getattr(importlib.import_module(module), cls)
    return found


def method_arguments(name: str) -> list[str]:
    """The keyword arguments the method ``name`` accepts (besides the engine), in order.

    A constructor that passes ``**kwargs`` to its parent accepts the parent's arguments too.
    """
    names: list[str] = []
    for klass in method_class(name).__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        forwards = False
        for param in list(inspect.signature(init).parameters.values())[2:]:  # self, engine
            if param.kind is param.VAR_KEYWORD:
                forwards = True
            elif param.kind is not param.VAR_POSITIONAL and param.name not in names:
                names.append(param.name)
        if not forwards:
            break
    return names


def check_method_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise :class:`InputError` naming the accepted arguments when ``kwargs`` has one the
    method ``name`` does not take (a typo such as ``windw=5``). Cheap: no engine, no model."""
    accepted = method_arguments(name)
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        import difflib

        hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, accepted, 1))
                 else repr(k) for k in unknown]  # fmt: skip
        raise InputError(
            f"method {name!r} takes no argument {', '.join(hints)}; "
            f"its arguments are: {', '.join(accepted) or 'none'}"
        )


def create_method(name: str, engine: Engine, **kwargs: Any) -> Method:
    """Create the method ``name`` (see :data:`METHODS`) on ``engine``.

    Arguments are checked by name first (:func:`check_method_kwargs`).
    """
    check_method_kwargs(name, kwargs)
    method: Method = method_class(name)(engine, **kwargs)  # type: ignore[call-arg]
    return method
