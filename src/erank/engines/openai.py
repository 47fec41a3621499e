"""The OpenAI-compatible engine: ``/v1/completions`` with log-probabilities over HTTP (httpx).

Works with any server that speaks the completions API with ``logprobs``: ``vllm serve``, SGLang,
``python -m llama_cpp.server``. Requests run concurrently (``concurrency`` at a time); a 429 or a
5xx answer, or a dropped connection, is retried with exponential backoff (``Retry-After`` is
honoured); any other 4xx becomes an :class:`~erank.errors.InputError` carrying the server's message.

* ``logprobs``: ``max_tokens=1``, ``temperature=0``, ``logprobs=top_logprobs``; the top
  log-probabilities come keyed by token text, mapped back to the requested token ids (score digits
  are single, unambiguous tokens). A token outside the top ``top_logprobs`` gets probability 0.
  A forced extension token is one more request ``prompt + extension[:j]``.
* ``generate``: greedy completion with the stop strings and per-step top log-probabilities.

The tokenizer is either a local Hugging Face tokenizer (``tokenizer="path/or/id"``, recommended: it
also brings the chat template) or the server's own endpoints (``/tokenize`` + ``/detokenize`` as
vLLM and SGLang serve them, or ``/extras/tokenize`` + ``/extras/detokenize`` as llama-cpp-python
does), with the chat template given as ``chat_template`` (Jinja text).

Prompts go to the server as text (``prompt_format="text"``, what every server accepts; the server
re-tokenizes it, parsing special tokens) or as token ids (``prompt_format="ids"``: vLLM, SGLang).

>>> from erank import Reranker                                             # doctest: +SKIP
>>> r = Reranker("smollm2", engine="openai",
...              engine_kwargs={"base_url": "http://127.0.0.1:8000/v1", "tokenizer": "HuggingFaceTB/SmolLM2-135M-Instruct"},
...              mode="direct")                                               # doctest: +SKIP
>>> r.rerank("capital of France", ["Paris.", "Bananas."])[0]["content"]     # doctest: +SKIP
'Paris.'
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from erank.engines import base
from erank.engines.base import Engine, GenerateRequest, GenerateResult, LogprobRequest, LogprobResult
from erank.errors import ERankError, InputError, ModelLoadError, require

__all__ = ["OpenAIEngine", "ServerTokenizer", "ServerError"]

logger = logging.getLogger(__name__)

_RETRY_STATUS = {429, 500, 502, 503, 504}


class ServerError(ERankError):
    """The server kept failing (5xx, 429 or no connection) after every retry."""


class ServerTokenizer:
    """Tokenizes through the server's own endpoints (vLLM/SGLang or llama-cpp-python style)."""

    def __init__(self, engine: OpenAIEngine, chat_template: str | None = None) -> None:
        self._engine = engine
        self._style: str | None = None
        self._template: Any = None
        if chat_template:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            self._template = env.from_string(chat_template)

    def _tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        e = self._engine
        if self._style in (None, "vllm"):
            resp = e._post_raw(
                e.root + "/tokenize", {"model": e.model_name, "prompt": text, "add_special_tokens": False}
            )
            if resp is not None:
                self._style = "vllm"
                return [int(t) for t in resp["tokens"]]
        self._style = "llamacpp"
        out = e._post(e.root + "/extras/tokenize", {"input": text})
        return [int(t) for t in out["tokens"]]

    def encode(self, text: str) -> list[int]:
        return self._tokenize(text)

    def encode_prompt(self, text: str) -> list[int]:
        return self._tokenize(text)

    def decode(self, ids: Sequence[int]) -> str:
        if not ids:
            return ""
        e = self._engine
        if self._style is None:
            self._tokenize("a")
        if self._style == "vllm":
            return str(
                e._post(e.root + "/detokenize", {"model": e.model_name, "tokens": list(ids)})["prompt"]
            )
        return str(e._post(e.root + "/extras/detokenize", {"tokens": list(ids)})["text"])

    def decode_prompt(self, ids: Sequence[int]) -> str:
        return self.decode(ids)

    def chat_prompt(self, user: str) -> str:
        if self._template is None:
            logger.warning(
                "no chat template (pass chat_template= or a local tokenizer); using the prompt as plain text"
            )
            return user
        return str(
            self._template.render(messages=[{"role": "user", "content": user}], add_generation_prompt=True)
        )


class _LocalTokenizer:
    """A local Hugging Face tokenizer; ``decode_prompt`` keeps special tokens (prompt text)."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        from erank.engines.tokenizers import HFTokenizer

        try:
            self._tok = HFTokenizer(AutoTokenizer.from_pretrained(path))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the tokenizer {path!r}: {exc}") from exc

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text)

    def encode_prompt(self, text: str) -> list[int]:
        return self._tok.encode_prompt(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(ids)

    def decode_prompt(self, ids: Sequence[int]) -> str:
        return str(self._tok.hf.decode(list(ids), skip_special_tokens=False))

    def chat_prompt(self, user: str) -> str:
        return self._tok.chat_prompt(user)


class OpenAIEngine(Engine):
    """A model behind an OpenAI-compatible ``/v1/completions`` endpoint.

    Args:
        model: the model name the server serves (default: the first of ``/v1/models``).
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (default ``$ERANK_OPENAI_BASE_URL``).
        api_key: sent as a bearer token (default ``$OPENAI_API_KEY``, may be empty).
        tokenizer: a local Hugging Face tokenizer (path or id); default the server's endpoints.
        chat_template: the Jinja chat template when the server's tokenizer is used.
        concurrency: requests in flight at once.
        max_retries, backoff: retries on 429/5xx/connection errors, first wait in seconds (doubling).
        timeout: seconds per HTTP request.
        top_logprobs: the ``logprobs`` count asked for.
        prompt_format: ``"text"`` or ``"ids"``.
    """

    name = "openai"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        tokenizer: str | os.PathLike[str] | None = None,
        chat_template: str | None = None,
        concurrency: int = 8,
        max_retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 300.0,
        top_logprobs: int = 20,
        prompt_format: str = "text",
        **unused: Any,
    ) -> None:
        super().__init__()
        if unused:
            logger.debug("OpenAI engine ignores %s", sorted(unused))
        httpx: Any = require("httpx", "openai", "the OpenAI-compatible engine")
        url = base_url or os.environ.get("ERANK_OPENAI_BASE_URL")
        if not url:
            raise InputError(
                "the openai engine needs base_url (e.g. http://127.0.0.1:8000/v1) or $ERANK_OPENAI_BASE_URL"
            )
        if prompt_format not in ("text", "ids"):
            raise InputError(f"prompt_format must be 'text' or 'ids', got {prompt_format!r}")
        if concurrency < 1 or max_retries < 0 or top_logprobs < 1:
            raise InputError("concurrency and top_logprobs must be at least 1 and max_retries at least 0")
        self.base_url = url.rstrip("/")
        self.root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._httpx = httpx
        self._client = httpx.Client(
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.top_logprobs = int(top_logprobs)
        self.prompt_format = prompt_format
        self._lock = threading.Lock()
        self.model_name = str(model) if model is not None else self._first_model()
        self.tokenizer: _LocalTokenizer | ServerTokenizer = (
            _LocalTokenizer(str(tokenizer)) if tokenizer is not None else ServerTokenizer(self, chat_template)
        )
        self._piece_cache: dict[int, str] = {}

    # ------------------------------------------------------------------ HTTP
    def _first_model(self) -> str:
        data = self._post(self.base_url + "/models", None)
        models = data.get("data") or []
        if not models:
            raise ModelLoadError(f"the server at {self.base_url} lists no model; pass model=")
        return str(models[0]["id"])

    def _post_raw(self, url: str, payload: dict[str, Any] | None) -> dict[str, Any] | None:
        """POST (GET when ``payload`` is None); ``None`` on 404 (an endpoint the server lacks)."""
        delay = self.backoff
        for attempt in range(self.max_retries + 1):
            try:
                if payload is None:
                    resp = self._client.get(url)
                else:
                    resp = self._client.post(url, json=payload)
            except self._httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise ServerError(f"could not reach {url} after {attempt + 1} attempts: {exc}") from exc
                logger.warning("%s: %s; retrying in %.2fs", url, type(exc).__name__, delay)
            else:
                if resp.status_code == 404:
                    return None
                if resp.status_code < 400:
                    result: dict[str, Any] = resp.json()
                    return result
                if resp.status_code not in _RETRY_STATUS:
                    raise InputError(
                        f"the server refused the request ({resp.status_code}) at {url}: {resp.text[:500]}"
                    )
                if attempt == self.max_retries:
                    raise ServerError(
                        f"{url} answered {resp.status_code} after {attempt + 1} attempts: {resp.text[:300]}"
                    )
                retry_after = resp.headers.get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    delay = max(delay, float(retry_after))
                logger.warning("%s answered %d; retrying in %.2fs", url, resp.status_code, delay)
            time.sleep(delay * (1.0 + 0.1 * random.random()))
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, url: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        out = self._post_raw(url, payload)
        if out is None:
            raise InputError(f"the server has no endpoint {url} (404)")
        return out

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def _prompt(self, ids: Sequence[int]) -> Any:
        return list(ids) if self.prompt_format == "ids" else self.tokenizer.decode_prompt(ids)

    def _complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        payload = {"model": self.model_name, "temperature": 0.0, **payload}
        out = self._post(self.base_url + "/completions", payload)
        with self._lock:
            self.stats.calls += 1
            usage = out.get("usage") or {}
            self.stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.stats.generated_tokens += int(usage.get("completion_tokens") or 0)
        choices = out.get("choices") or []
        if not choices:
            raise ServerError(f"the server answered without choices: {str(out)[:300]}")
        choice: dict[str, Any] = choices[0]
        return choice

    def _pieces(self, ids: Sequence[int]) -> dict[str, int]:
        """token text -> id for the requested tokens (what top_logprobs are keyed by)."""
        out: dict[str, int] = {}
        for t in ids:
            if t not in self._piece_cache:
                self._piece_cache[t] = self.tokenizer.decode([t])
            out[self._piece_cache[t]] = t
        return out

    def _select(self, top: dict[str, float] | None, ids: Sequence[int]) -> dict[int, float]:
        if not top:
            return {}
        pieces = self._pieces(ids)
        return {pieces[s]: float(v) for s, v in top.items() if s in pieces}

    # ------------------------------------------------------------------ protocol
    def logprobs(self, requests: Sequence[LogprobRequest]) -> list[LogprobResult]:
        jobs: list[tuple[int, int, list[int]]] = []
        base.check_requests(requests)
        for i, r in enumerate(requests):
            for j in range(len(r.extension) + 1):
                jobs.append((i, j, list(r.prompt_ids) + list(r.extension[:j])))
        for r in requests:
            self._pieces(r.token_ids)  # fill the piece cache before the threads start

        def one(job: tuple[int, int, list[int]]) -> dict[int, float]:
            i, _, ids = job
            choice = self._complete(
                {"prompt": self._prompt(ids), "max_tokens": 1, "logprobs": self.top_logprobs}
            )
            tops = (choice.get("logprobs") or {}).get("top_logprobs") or [None]
            return self._select(tops[0], requests[i].token_ids)

        got = self._map(one, jobs)
        steps: list[list[dict[int, float]]] = [[{} for _ in range(len(r.extension) + 1)] for r in requests]
        for (i, j, _), d in zip(jobs, got, strict=True):
            steps[i][j] = d
        return [LogprobResult(steps=s) for s in steps]

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        base.check_requests(requests)
        for r in requests:
            if r.logprob_token_ids:
                self._pieces(r.logprob_token_ids)

        def one(r: GenerateRequest) -> GenerateResult:
            payload: dict[str, Any] = {
                "prompt": self._prompt(r.prompt_ids),
                "max_tokens": int(r.max_new_tokens),
            }
            if r.stop:
                payload["stop"] = list(r.stop)
            if r.logprob_token_ids:
                payload["logprobs"] = self.top_logprobs
            choice = self._complete(payload)
            text = str(choice.get("text") or "")
            finish = "length" if choice.get("finish_reason") == "length" else "stop"
            ids = self.tokenizer.encode(text)
            lp = choice.get("logprobs") or {}
            tokens = lp.get("tokens") or []
            steps: list[dict[int, float]] = []
            if r.logprob_token_ids and len(tokens) == len(ids):
                steps = [self._select(t, r.logprob_token_ids) for t in lp.get("top_logprobs") or []]
            # else: the server's tokens do not line up with ours: leave steps empty and the method
            # reads P(s) with one logprobs call instead.
            if (
                finish == "stop"
                and len(r.stop) == 1
                and not text.endswith(r.stop[0])
                and _open_tag(text, r.stop[0])
            ):
                # OpenAI servers drop the stop string; put it back as the other engines keep it.
                text += r.stop[0]
                ids += self.tokenizer.encode(r.stop[0])
            return GenerateResult(token_ids=ids, text=text, finish_reason=finish, step_logprobs=steps)  # type: ignore[arg-type]

        return self._map(one, list(requests))

    def close(self) -> None:
        self._client.close()


def _open_tag(text: str, stop: str) -> bool:
    """Whether ``text`` opened the tag that ``stop`` closes (``<answer>`` for ``</answer>``)."""
    if stop.startswith("</") and stop.endswith(">"):
        return text.rfind("<" + stop[2:]) > text.rfind(stop)
    return False
