"""Prompt templates and task instructions, kept as data files beside this module.

Templates are plain text files with ``{placeholder}`` fields; they are filled by literal
replacement (never ``str.format``), so documents containing braces are safe. Every template is
checked for exactly the placeholders its method needs when it is loaded.

>>> from erank.prompts import render_template, resolve_instruction
>>> text = render_template("erank", instruction=resolve_instruction("beir"), query="q", doc="d")
>>> text.splitlines()[1]
'The goal or relevance definition is: Given a query, retrieval relevant passage.'
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from importlib import resources

import yaml

from erank.errors import InputError

__all__ = [
    "load_template",
    "template_text",
    "render_template",
    "resolve_instruction",
    "instruction_names",
    "InstructionText",
    "template_placeholders",
]

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


@cache
def load_template(name: str) -> str:
    """The text of template ``name`` (a file ``<name>.txt`` in this package)."""
    try:
        return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"unknown prompt template {name!r}") from exc


def template_text(template: str | None, default: str) -> str:
    """The text of a method's template: ``default`` by name when ``template`` is None, else
    ``template`` itself when it is a template text (has a ``{placeholder}``), else the named file."""
    if template is None:
        return load_template(default)
    return template if "{" in template else load_template(template)


def template_placeholders(text: str) -> set[str]:
    """The ``{placeholder}`` names used in a template text."""
    return set(_PLACEHOLDER.findall(text))


def render_template(name_or_text: str, *, required: set[str] | None = None, **fields: str) -> str:
    """Fill a template (by name, or a template text containing placeholders) with ``fields``.

    Every placeholder must be given and every given field must be used; ``required`` adds a
    check that the template has at least those placeholders.
    """
    text = name_or_text if "{" in name_or_text else load_template(name_or_text)
    names = template_placeholders(text)
    missing = names - set(fields)
    if missing:
        raise InputError(f"template needs the fields {sorted(missing)}")
    unused = set(fields) - names
    if unused:
        raise InputError(f"template has no placeholder for {sorted(unused)}")
    if required and not required <= names:
        raise InputError(f"template lacks the placeholders {sorted(required - names)}")
    # Replace in one pass so that a field's value containing "{doc}" is never re-expanded.
    return _PLACEHOLDER.sub(lambda m: fields[m.group(1)], text)


class InstructionText(str):
    """An instruction that is text, never a name: :func:`resolve_instruction` returns it as it is
    (the official ERank classes pass every instruction that is not exactly a name this way)."""

    __slots__ = ()


@lru_cache(maxsize=1)
def _instructions() -> dict[str, str]:
    raw = resources.files(__package__).joinpath("instructions.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(raw)
    return {k: v for k, v in data.items() if not k.startswith("_")}


def instruction_names() -> list[str]:
    """The names of the built-in task instructions (spec 2.6)."""
    return sorted(_instructions())


def resolve_instruction(instruction: str | None, default: str = "beir") -> str:
    """Turn an instruction name (``"beir"``, ``"bright/leetcode"``) or free text into the text.

    ``None`` or an empty string gives the ``default`` instruction. A string without whitespace
    that looks like a name but is not one is an error (it is almost certainly a typo).
    """
    if instruction is None or (isinstance(instruction, str) and not instruction.strip()):
        instruction = default
    if not isinstance(instruction, str):
        raise InputError(f"instruction must be a string, got {type(instruction).__name__}")
    if isinstance(instruction, InstructionText):
        return str(instruction)
    table = _instructions()
    key = instruction.strip()
    if key in table:
        return table[key]
    if key.lower() in table:
        return table[key.lower()]
    if _NAME.match(key) and ("/" in key or key.islower()):
        close = [n for n in table if n.split("/")[0] == key.split("/")[0]] or sorted(table)
        raise InputError(
            f"unknown instruction name {instruction!r}; known names: {', '.join(sorted(close))} "
            "(or pass the instruction as free text)"
        )
    return instruction
