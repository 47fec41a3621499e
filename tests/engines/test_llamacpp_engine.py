"""The llama.cpp engine on the real embedded default GGUF (SmolLM2-135M, Q4_1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from erank.engines.base import GenerateRequest, LogprobRequest
from erank.errors import InputError, ModelLoadError

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

pytestmark = pytest.mark.slow


def test_tokenizer_and_chat_template_match_transformers(llamacpp_default, tf_default) -> None:  # noqa: ANN001
    text = "Judge the relevance of <doc> 42 to the query, please. 10"
    for a, b in ((llamacpp_default.tokenizer, tf_default.tokenizer),):
        assert a.encode(text) == b.encode(text)
        assert a.chat_prompt("hello") == b.chat_prompt("hello")
        prompt = a.chat_prompt("hello") + "<think>\n\n</think><answer>"
        assert a.encode_prompt(prompt) == b.encode_prompt(prompt)
        assert a.decode(a.encode(text)) == text


def test_prefix_is_reused_across_requests(llamacpp_default) -> None:  # noqa: ANN001
    e = llamacpp_default
    head = e.tokenizer.encode_prompt("a shared beginning of every prompt " * 5)
    reqs = [
        LogprobRequest(head + e.tokenizer.encode(t), [15, 16], extension=[17])
        for t in ("one", "two", "three")
    ]
    before = e.stats.prompt_tokens
    out = e.logprobs(reqs)
    assert all(len(r.steps) == 2 and set(r.steps[0]) == {15, 16} for r in out)
    evaluated = e.stats.prompt_tokens - before
    assert evaluated < len(head) + 3 * 4  # the head ran at most once
    # the same request alone (cache rebuilt from scratch) gives the same numbers
    e.llm.reset()
    again = e.logprobs(reqs[1:2])[0]
    assert again.steps[0] == pytest.approx(out[1].steps[0], abs=1e-3)


def test_greedy_generation_stops_at_the_stop_string(llamacpp_default) -> None:  # noqa: ANN001
    e = llamacpp_default
    prompt = e.tokenizer.encode_prompt(e.tokenizer.chat_prompt("Name three colours."))
    # each run from an empty cache: reusing the cache changes llama.cpp's kernel split, and with
    # it the rounding, enough to flip a near-tie greedy choice (docs/engines.md)
    e.llm.reset()
    free = e.generate([GenerateRequest(prompt, max_new_tokens=12)])[0]
    assert len(free.token_ids) == 12 and free.finish_reason == "length"
    stop = free.text[len(free.text) // 2 :][:3]  # a string greedy decoding is known to write
    e.llm.reset()
    g = e.generate([GenerateRequest(prompt, max_new_tokens=12, stop=[stop], logprob_token_ids=[15, 16])])[0]
    assert g.finish_reason == "stop" and g.text.endswith(stop) and free.text.startswith(g.text)
    assert len(g.step_logprobs) == len(g.token_ids) < 12


def test_errors_are_clear(llamacpp_default, smollm2_dir: Path) -> None:  # noqa: ANN001
    from erank.engines.llamacpp import LlamaCppEngine

    with pytest.raises(ModelLoadError, match="GGUF"):
        LlamaCppEngine(str(smollm2_dir))
    # a hub id: at once, one line saying how to get a GGUF file (nothing is downloaded)
    with pytest.raises(ModelLoadError, match=r"`hf download no-such-org/no-such-model FILE\.gguf"):
        LlamaCppEngine("no-such-org/no-such-model")
    with pytest.raises(InputError, match="does not fit"):
        llamacpp_default.logprobs([LogprobRequest([1] * 5000, [15])])
    with pytest.raises(InputError, match="empty prompt"):
        llamacpp_default.logprobs([LogprobRequest([], [15])])


def test_a_build_that_crashes_on_decode_is_a_clear_error_not_a_crash(
    smollm2_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A llama-cpp-python that segfaults on its first decode (0.3.36 did here) must not kill us."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    import erank.engines.llamacpp as mod

    monkeypatch.setattr(mod, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    monkeypatch.setattr(mod, "_checked", {})
    assert "signal 11" in (mod.check_llama_cpp(smollm2_gguf) or "")
    with pytest.raises(ModelLoadError, match=r"unusable on this machine: .*signal 11.*constraints.txt"):
        mod.LlamaCppEngine("smollm2-135m")
