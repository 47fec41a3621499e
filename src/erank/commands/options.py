"""The options the ``erank`` commands share, defined once: the same names, defaults, help and validation.

Every command builds its parser from these helpers, so ``--top-k`` means "candidates reranked per
query" wherever it exists, ``--queries N`` "the first N judged queries by id", ``--instruction`` a
name or free text, and so on. Options renamed so that no flag means two things keep their old
spelling for a while (:class:`DeprecatedAlias`): it works and says what to write instead.

:func:`preflight` runs before any command: the cheap checks (instruction names, method arguments,
the model reference, the hub cache when offline) so that a bad argument fails in well under a
second, before any model loads.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from erank.reranker import Reranker

__all__ = [
    "DEFAULT_TOP_K",
    "DEFAULT_TRUNCATE_LENGTH",
    "HelpFormatter",
    "DeprecatedAlias",
    "positive_int",
    "unit_float",
    "unit_floats",
    "add_model_options",
    "add_instruction",
    "add_truncate_length",
    "add_runtime_options",
    "add_top_k",
    "add_queries",
    "add_progress",
    "add_check",
    "deprecations",
    "preflight",
]

#: Candidates reranked per query (``--top-k``), in every command that reranks first-stage lists.
DEFAULT_TOP_K = 100
#: Tokens kept of the query and of each document (``--truncate-length``), as in ERank's code.
DEFAULT_TRUNCATE_LENGTH = 2048

_DEPRECATIONS = "_erank_deprecations"
_SHARED_MODEL = "_erank_model_options"
_CHECK = "_erank_check"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows a default only where the option's text does not already give it, and never
    "(default: None)": options whose default depends on something else say so in their text."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or action.required
            or not action.option_strings
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or isinstance(action, DeprecatedAlias)
            or isinstance(default, (list, tuple, dict))
        ):
            return text
        return f"{text} (default: %(default)s)"


class DeprecatedAlias(argparse.Action):
    """An old option spelling that still works: it sets ``dest`` like the new option and leaves a
    note that the command line prints as a warning (``erank: warning: -k is deprecated...``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, use: str, **kwargs: Any) -> None:
        self.use = use
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        notes = list(getattr(namespace, _DEPRECATIONS, []))
        notes.append(f"{option_string} is deprecated here; use {self.use}")
        setattr(namespace, _DEPRECATIONS, notes)


def add_alias(p: argparse.ArgumentParser, *old: str, new: str, use: str | None = None) -> None:
    """Keep ``old`` spellings working for the option ``new`` (already added to ``p``): the same
    destination and type, and a deprecation warning naming ``use`` (default ``new``) when used."""
    target = next(a for a in p._actions if new in a.option_strings)
    kwargs: dict[str, Any] = {"type": target.type} if target.type is not None else {}
    p.add_argument(*old, dest=target.dest, action=DeprecatedAlias, use=use or new, **kwargs)


def add_command(
    subparsers: Any, name: str, help: str, description: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand of ``erank`` (or of a command with stages): its parser, help formatted alike."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=description or help, formatter_class=HelpFormatter
    )
    return parser


def deprecations(args: argparse.Namespace) -> list[str]:
    """The deprecation notes the parse left (see :class:`DeprecatedAlias`)."""
    return list(getattr(args, _DEPRECATIONS, []))


# ---------------------------------------------------------------------------- value types


def positive_int(text: str) -> int:
    """An argparse type: an integer > 0 (``-k 0`` fails at once, not after scoring)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def unit_float(text: str) -> float:
    """An argparse type: a number from 0 to 1 (``--alpha``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


def unit_floats(text: str) -> list[float]:
    """An argparse type: one number from 0 to 1 or a comma-separated list of them."""
    values = [unit_float(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 or a list, got {text!r}")
    return values


# ---------------------------------------------------------------------------- option groups


def add_model_options(p: argparse.ArgumentParser, *, method: bool = True) -> None:
    """``--model/-m``, ``--engine`` and, with ``method``, ``--method``, ``--mode``, ``--max-new-tokens``."""
    from erank.engines import ENGINES
    from erank.methods import METHODS

    p.add_argument(
        "--model",
        "-m",
        default=None,
        help="a hub id (Alibaba-NLP/ERank-4B), a model folder or a .gguf file; "
        "default: the embedded erank-smol (docs/real-models.md for the real checkpoints)",
    )
    p.add_argument(
        "--engine",
        default="transformers",
        choices=sorted(ENGINES),
        help="what runs the model (default transformers)",
    )
    p.set_defaults(**{_SHARED_MODEL: True})
    if not method:
        return
    p.add_argument(
        "--method", default="erank", choices=sorted(METHODS), help="the ranking method (default erank)"
    )
    p.add_argument(
        "--mode",
        choices=["direct", "reasoning"],
        default=None,
        help="ERank mode: direct (one forward pass) or reasoning (generate, then score); "
        "default direct for the embedded model, reasoning for any other",
    )
    p.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=None,
        help="generation budget in tokens (reasoning mode; default: the method's own, 4096 for erank)",
    )


def add_instruction(p: argparse.ArgumentParser, default: str = "beir") -> None:
    """``--instruction``: a task instruction name (exact) or free text."""
    p.add_argument(
        "--instruction",
        default=None,
        help="a task instruction name (beir, trec-dl, followir, bright/<task>) or free text; "
        f"default {default}",
    )


def add_truncate_length(p: argparse.ArgumentParser) -> None:
    _count(p, "--truncate-length", DEFAULT_TRUNCATE_LENGTH, "tokens kept of the query and of each document")


def add_runtime_options(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    """``--device``, ``--threads`` and ``--dtype``."""
    if device:
        p.add_argument(
            "--device", default=None, help="cpu, cuda, cuda:1... (default: CUDA when available, else CPU)"
        )
    p.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's own choice)"
    )
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default=None,
        help="transformers engine precision; default auto: bfloat16 on CUDA and on CPUs with bf16 "
        "units (AMX / avx512_bf16), else float32 (sets ERANK_DTYPE)",
    )


def add_top_k(p: argparse.ArgumentParser) -> None:
    _count(p, "--top-k", DEFAULT_TOP_K, "first-stage candidates reranked per query")


def _count(p: argparse.ArgumentParser, flag: str, default: int, text: str) -> None:
    """A positive count option with its default in the help."""
    p.add_argument(flag, type=positive_int, default=default, help=f"{text} (default {default})")


def add_queries(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--queries",
        type=positive_int,
        default=None,
        metavar="N",
        help="only the first N judged queries, by query id (numbers numerically); default all",
    )


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is drawn on stderr only when that is a terminal)",
    )


# ---------------------------------------------------------------------------- checks


def add_check(p: argparse.ArgumentParser, check: Callable[[argparse.Namespace], None]) -> None:
    """Run ``check(args)`` (a command's own cheap checks) in :func:`preflight`, before the shared ones."""
    p.set_defaults(**{_CHECK: check})


def progress_from(args: argparse.Namespace) -> bool | None:
    """``enabled=`` for :func:`erank.progress.progress_bar`: off with ``--no-progress``, else automatic."""
    return False if getattr(args, "no_progress", False) else None


def method_kwargs_from(args: Any) -> dict[str, Any]:
    """The method arguments the shared options (or the server's settings) carry (``--max-new-tokens``)."""
    out: dict[str, Any] = {}
    if getattr(args, "max_new_tokens", None) is not None:
        out["max_new_tokens"] = args.max_new_tokens
    return out


def reranker_from(settings: Any, **engine_options: Any) -> Reranker:
    """The :class:`~erank.Reranker` that model settings name: the parsed shared options or the
    server's :class:`~erank.serving.settings.ServeSettings` (``model``, ``method``, ``engine``,
    ``mode``, ``device`` and ``max_new_tokens``); ``engine_options`` go to the engine."""
    from erank.reranker import Reranker

    return Reranker(
        settings.model,
        method=settings.method,
        engine=settings.engine,
        mode=settings.mode,
        device=settings.device,
        **engine_options,
        **method_kwargs_from(settings),
    )


def load_reranker(args: argparse.Namespace) -> Reranker:
    """The :class:`~erank.Reranker` the shared model options name, with a status line while it loads."""
    from erank.progress import progress_status

    with progress_status(f"loading {args.model or 'erank-smol'}", enabled=progress_from(args)):
        return reranker_from(args)


def preflight(args: argparse.Namespace) -> None:
    """Cheap checks of the shared options before a command runs (no model is loaded here).

    Raises :class:`~erank.errors.ERankError` subclasses with a one-line message.
    """
    check = getattr(args, _CHECK, None)
    if check is not None:
        check(args)
    instruction = getattr(args, "instruction", None)
    if instruction:
        from erank.prompts import resolve_instruction

        resolve_instruction(instruction)
    method = getattr(args, "method", None)
    if getattr(args, _SHARED_MODEL, False) and isinstance(method, str):
        from erank.methods import check_method_kwargs

        kwargs = method_kwargs_from(args)
        if getattr(args, "mode", None) is not None:
            kwargs["mode"] = args.mode
        check_method_kwargs(method, kwargs)
    if getattr(args, _SHARED_MODEL, False) and args.engine != "openai":
        from erank.models import check_model_available, resolve_model

        check_model_available(resolve_model(args.model))
    threads = getattr(args, "threads", None)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    dtype = getattr(args, "dtype", None)
    if dtype:  # the transformers engine's "auto" reads it, in every command (and its workers)
        os.environ["ERANK_DTYPE"] = str(dtype)
