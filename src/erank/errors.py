"""The exceptions erank raises for things a user can fix.

Every error a user can cause (bad file, empty query, unknown model, missing extra) is one of
these, with a message that says what was wrong and what to do.
"""

from __future__ import annotations

__all__ = [
    "ERankError",
    "InputError",
    "ModelLoadError",
    "MissingExtraError",
    "DataFormatError",
    "PromptBudgetError",
]


class ERankError(Exception):
    """Base class of erank's own errors."""


class InputError(ERankError, ValueError):
    """An argument or input value is invalid (empty query, wrong type, negative length...)."""


class PromptBudgetError(InputError):
    """A query's prompts exceed ``max_prompt_tokens`` (:meth:`Method.prepare`); raised as soon as
    the running total passes it, naming the document where it did."""

    def __init__(self, limit: int, document: int, documents: int) -> None:
        self.limit, self.document, self.documents = limit, document, documents
        super().__init__(
            f"the prompts exceed {limit} tokens by document {document} of {documents}; "
            "send fewer documents, or cut them shorter"
        )


class ModelLoadError(ERankError, OSError):
    """A model could not be found or loaded (unknown hub id, hub unreachable, bad file)."""


class DataFormatError(ERankError, ValueError):
    """A data file is malformed; the message names the file and, where known, the line."""


class MissingExtraError(ERankError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    #: Old names of extras, still accepted by :func:`require` (the extra is ``train``).
    ALIASES = {"training": "train"}

    def __init__(self, package: str, extra: str, purpose: str = "") -> None:
        extra = self.ALIASES.get(extra, extra)
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"the optional package '{package}' is needed{what}; install the extra '{extra}': "
            f"pip install 'erank[{extra}]' (in an erank checkout: .venv/bin/pip install -c constraints.txt "
            f"-e '.[{extra}]', or bash scripts/install.sh --all)"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str, purpose: str = "") -> object:
    """Import an optional module or raise :class:`MissingExtraError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(module.split(".")[0], extra, purpose) from exc
