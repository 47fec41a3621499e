"""The small protocol every engine implements.

An engine runs a causal language model and knows nothing about reranking. It offers two
operations on token ids, both batched:

* :meth:`Engine.logprobs`: the log-probabilities of a few chosen tokens at the end of a prompt,
  and after each token of an optional forced ``extension`` (so ``P("0" | "1")`` for the score
  "10" comes from the same forward pass as ``P("1")``). Only the rows of the logits that are
  needed are computed.
* :meth:`Engine.generate`: greedy generation with stop strings and a token budget, recording the
  log-probabilities of chosen tokens at every generated step.

Methods (``erank.methods``) build prompts and parse outputs; engines run them. Everything a
method needs from the model's tokenizer goes through :class:`Tokenizer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from erank.errors import InputError

__all__ = [
    "Tokenizer",
    "Engine",
    "LogprobRequest",
    "LogprobResult",
    "GenerateRequest",
    "GenerateResult",
    "EngineStats",
    "check_requests",
    "prefix_groups",
]


@runtime_checkable
class Tokenizer(Protocol):
    """What methods need from a tokenizer."""

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens added."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens removed."""
        ...

    def chat_prompt(self, user: str) -> str:
        """``user`` as one user turn through the model's chat template, generation prompt added."""
        ...

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (special tokens in the text are parsed as such)."""
        ...


@dataclass
class LogprobRequest:
    """Read log-probabilities of ``token_ids`` after ``prompt_ids`` (+ each ``extension`` token).

    The result has ``len(extension) + 1`` steps: step 0 is the distribution of the token after the
    prompt, step ``j`` the one after ``prompt + extension[:j]``.
    """

    prompt_ids: list[int]
    token_ids: list[int]
    extension: list[int] = field(default_factory=list)


@dataclass
class LogprobResult:
    steps: list[dict[int, float]]


@dataclass
class GenerateRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    stop: list[str] = field(default_factory=list)
    logprob_token_ids: list[int] = field(default_factory=list)


@dataclass
class GenerateResult:
    token_ids: list[int]
    text: str
    finish_reason: Literal["stop", "length"]
    step_logprobs: list[dict[int, float]] = field(default_factory=list)


@dataclass
class EngineStats:
    """Running totals an engine keeps: forward calls and tokens seen and generated."""

    calls: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0


class Engine(ABC):
    """Base class of the engines: transformers, vLLM, llama.cpp, OpenAI-compatible servers."""

    name: str = "engine"
    model_name: str = ""
    tokenizer: Tokenizer

    def __init__(self) -> None:
        self.stats = EngineStats()

    @abstractmethod
    def logprobs(self, requests: Sequence[LogprobRequest]) -> list[LogprobResult]:
        """Log-probabilities of the requested tokens, one result per request, in order."""

    @abstractmethod
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Greedy generations, one per request, in order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model (engines holding servers or processes override this)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_requests(requests: Sequence[LogprobRequest | GenerateRequest]) -> None:
    """Refuse, before anything runs, a request with an empty prompt or a generation budget under
    one token (every engine calls it first)."""
    for r in requests:
        kind = "generate" if isinstance(r, GenerateRequest) else "logprob"
        if not r.prompt_ids:
            raise InputError(f"a {kind} request has an empty prompt; pass at least one prompt token")
        if isinstance(r, GenerateRequest) and r.max_new_tokens <= 0:
            raise InputError(f"max_new_tokens must be positive, got {r.max_new_tokens}")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_groups(
    seqs: Sequence[Sequence[int]], tails: Sequence[int], min_prefix: int
) -> list[tuple[int, list[int]]]:
    """Request indices grouped by a common prefix, ``[(prefix_length, indices)]``, for engines that
    run a shared prompt start once.

    Requests are taken in token order; consecutive ones sharing at least ``min_prefix`` tokens
    form a group. ``tails[i]`` is how many final tokens of request ``i`` must stay outside the
    prefix (the positions whose logits are read, at least one). A lone request has prefix 0.
    """
    if not seqs:
        return []
    order = sorted(range(len(seqs)), key=lambda i: list(seqs[i]))
    out: list[tuple[int, list[int]]] = []
    cur, cur_len = [order[0]], len(seqs[order[0]]) - tails[order[0]]
    for prev, i in zip(order, order[1:], strict=False):
        new = min(cur_len, common_prefix(seqs[prev], seqs[i]), len(seqs[i]) - tails[i])
        if new >= min_prefix:
            cur.append(i)
            cur_len = new
        else:
            out.append((cur_len if len(cur) > 1 else 0, cur))
            cur, cur_len = [i], len(seqs[i]) - tails[i]
    out.append((cur_len if len(cur) > 1 else 0, cur))
    return out
