"""Request checks before any model work: one rule for every text field, documents and their
fields, limits, and the warnings a response carries. Each failure is an :class:`HTTPError`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from erank.serving.errors import HTTPError
from erank.serving.schemas import (
    CohereDocument,
    ScoreDocument,
)
from erank.serving.settings import ServeSettings

__all__ = ["FREE_TEXT_PATTERN", "INSTRUCTION_NAME", "check_strings", "check_text"]


def check_strings(value: Any, field: str) -> None:
    """Every string in ``value`` (keys too, any depth) is valid Unicode: a lone UTF-16 surrogate
    (``"\\ud800"`` in the JSON) is a 422 naming the field, wherever it sits."""
    stack: list[tuple[Any, str]] = [(value, field)]
    while stack:  # iterative: a deeply nested document object cannot exhaust the stack
        item, where = stack.pop()
        if isinstance(item, str):
            _check_unicode(item, where)
        elif isinstance(item, dict):
            for k, v in item.items():
                inner = f"{where}.{k}" if where else str(k)
                _check_unicode(str(k), f"{inner} (a key)")
                stack.append((v, inner))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))


def _check_unicode(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HTTPError(
            422,
            "invalid_input",
            f"{field} is not valid Unicode (an unpaired surrogate at character {exc.start}); send valid UTF-8 text",
            field=field.split(" ")[0],
        ) from None


def check_text(value: str, field: str, what: str) -> str:
    """One rule for every text field: not empty, not whitespace only, valid Unicode."""
    _check_unicode(value, field)
    if not value.strip():
        raise HTTPError(422, "invalid_input", f"{field} is empty; {what}", field=field)
    return value


def _check_query(query: str) -> str:
    return check_text(query, "query", "send the text of the query")


#: What an instruction name may hold; a text of these characters only must be a known name.
INSTRUCTION_NAME = re.compile(r"[A-Za-z0-9_./\-]+")
#: The schema's rule for free-text instructions: some character a name cannot hold.
FREE_TEXT_PATTERN = r"[^A-Za-z0-9_./\s-]|\S\s+\S"


def _check_instruction(instruction: str | None) -> str | None:
    if instruction is None:
        return None
    check_text(instruction, "instruction", "leave it out for the server's default, or send its text")
    from erank.prompts import instruction_names

    key = instruction.strip()
    if INSTRUCTION_NAME.fullmatch(key) and key not in instruction_names():
        raise HTTPError(
            422,
            "invalid_input",
            f"unknown instruction name {key!r}; known names: {', '.join(sorted(instruction_names()))} "
            "(or pass the instruction as free text, several words)",
            field="instruction",
        )
    return instruction


def _document_texts(
    documents: Sequence[str | CohereDocument | ScoreDocument],
    settings: ServeSettings,
    rank_fields: list[str] | None = None,
    warnings: list[str] | None = None,
) -> list[str]:
    if len(documents) > settings.max_documents:
        raise HTTPError(
            413,
            "too_many_documents",
            f"{len(documents)} documents in one request; the limit is {settings.max_documents} "
            "(split the request, or start the server with a larger --max-documents)",
            field="documents",
        )
    if not documents:
        raise HTTPError(
            422, "invalid_input", "documents is empty; send at least one document", field="documents"
        )
    texts: list[str] = []
    fallback: list[int] = []
    for i, d in enumerate(documents):
        field = f"documents[{i}]"
        if isinstance(d, str):
            texts.append(check_text(d, field, "remove it or send its text"))
            continue
        values: dict[str, Any] = dict(d.model_extra or {})
        # A Cohere object's fields are all text that rank_fields may name; an erank object's
        # other keys are metadata, returned as they came.
        texts_of = list(values) if isinstance(d, CohereDocument) else []
        for name in ("text", "content"):
            if getattr(d, name, None) is not None:
                values[name] = getattr(d, name)
                texts_of.append(name)
        for key in texts_of:
            check_text(values[key], f"{field}.{key}", "remove the field or send its text")
        text: str | None = None
        if rank_fields:
            lines = [f"{k}: {values[k]}" for k in rank_fields if isinstance(values.get(k), str)]
            if lines:
                text = "\n".join(lines)
            else:
                fallback.append(i)
        if text is None:
            text = values.get("text") if values.get("text") is not None else values.get("content")
        if text is None:
            wanted = (
                f"none of the rank_fields {rank_fields} and no 'text'" if rank_fields else "a 'text' string"
            )
            raise HTTPError(
                422, "invalid_input", f"{field} is an object without {wanted}", field=field + ".text"
            )
        texts.append(text)
    if fallback and warnings is not None and rank_fields:
        shown = fallback[:20]
        more = "" if len(fallback) <= 20 else f" and {len(fallback) - 20} more"
        warnings.append(
            f"documents {shown}{more} have none of the rank_fields {rank_fields}; their text was ranked"
        )
    return texts


def _max_tokens(requested: int | None, settings: ServeSettings) -> int:
    return settings.max_tokens_per_doc if requested is None else min(requested, settings.max_tokens_per_doc)


def _top_n(top_n: int | None, count: int, warnings: list[str]) -> int:
    if top_n is None:
        return count
    if top_n > count:
        warnings.append(f"top_n={top_n} is larger than the {count} documents; all {count} are returned")
        return count
    return top_n


def _truncation_warning(truncated: list[bool], max_tokens: int, warnings: list[str]) -> None:
    cut = [i for i, t in enumerate(truncated) if t]
    if cut:
        shown = cut[:20]
        more = "" if len(cut) <= 20 else f" and {len(cut) - 20} more"
        warnings.append(f"documents {shown}{more} were truncated to {max_tokens} tokens")


def _instruction_warning(cut: bool, settings: ServeSettings, warnings: list[str]) -> None:
    if cut:
        warnings.append(
            f"the instruction was cut to {settings.max_instruction_tokens} tokens (--max-instruction-tokens)"
        )


def _document_out(d: str | CohereDocument | ScoreDocument) -> dict[str, Any]:
    if isinstance(d, str):
        return {"text": d}
    return d.model_dump(exclude_none=True)
