"""Tokenizer wrappers shared by engines: the one home of :class:`HFTokenizer`.

Every engine whose tokenizer is a Hugging Face one (transformers, vLLM, an OpenAI-compatible server
with a local tokenizer) wraps it here, behind :class:`~erank.engines.base.Tokenizer`; no engine
imports a sibling engine for it. Importing this module needs neither torch nor transformers.

>>> class Toy:  # anything with the Hugging Face call/decode API
...     chat_template = None
...     def __call__(self, text, add_special_tokens=False):
...         return {"input_ids": [ord(c) for c in text]}
...     def decode(self, ids, skip_special_tokens=True):
...         return "".join(map(chr, ids))
>>> tok = HFTokenizer(Toy())
>>> tok.encode("ab"), tok.decode([104, 105])
([97, 98], 'hi')
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

__all__ = ["HFTokenizer"]

logger = logging.getLogger(__name__)


class HFTokenizer:
    """A transformers tokenizer behind erank's :class:`~erank.engines.base.Tokenizer` protocol."""

    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def encode_prompt(self, text: str) -> list[int]:
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.hf.decode(list(ids), skip_special_tokens=True))

    def chat_prompt(self, user: str) -> str:
        if getattr(self.hf, "chat_template", None):
            return str(
                self.hf.apply_chat_template(
                    [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
                )
            )
        logger.warning("the tokenizer has no chat template; using the prompt as plain text")
        return user


def token_id_list(x: Any) -> list[int]:
    """A token id setting (``eos_token_id``: None, one id or several) as a list of ids."""
    if x is None:
        return []
    if isinstance(x, int):
        return [x]
    return [int(v) for v in x]


def trim_tokens_to_text(decode: Any, ids: list[int], n_chars: int) -> list[int]:
    """The shortest prefix of ``ids`` whose decoded text is at least ``n_chars`` long."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= n_chars:
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo]
