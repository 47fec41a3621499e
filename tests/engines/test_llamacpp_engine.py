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
    e = llamacpp_default  # n_seq=1: one sequence at a time, its KV cache reused across requests
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


def _score_requests(e) -> list[LogprobRequest]:  # noqa: ANN001
    """Real ERank-style prompts: one query's documents (a shared head), and two other queries."""
    docs = [
        "Paris is the capital and most populous city of France.",
        "Bananas are rich in potassium and grow in tropical climates.",
        "The Amazon rainforest covers much of the Amazon basin of South America, " * 4,
        "France's capital, Paris, lies on the Seine.",
        "x",
    ]
    prompts = [f"Query: what is the capital of france\nDocument: {d}\nScore 0-10:" for d in docs]
    prompts += ["Query: how do vaccines work\nDocument: Vaccines train the immune system.\nScore:"]
    prompts += ["Bread needs flour, water, salt and time."]
    tok = e.tokenizer
    digits = [tok.encode(str(d))[0] for d in range(10)]
    return [
        LogprobRequest(tok.encode_prompt(tok.chat_prompt(p)), digits, extension=[digits[1]]) for p in prompts
    ]


def test_several_sequences_per_decode_give_the_one_at_a_time_numbers(llamacpp_default, tf_default) -> None:  # noqa: ANN001
    """``n_seq`` > 1 decodes a query's documents together after one pass over their shared head.
    llama.cpp's rounding depends on the batch shape, so the paths are compared with the float32
    transformers engine on the same weights as the yardstick: the batched one is as close to it
    as the one-at-a-time one."""
    from erank.engines.llamacpp import LlamaCppEngine

    reqs = _score_requests(llamacpp_default)
    # a small batch, so that requests are split over several decodes and slots are reused
    e = LlamaCppEngine("smollm2-135m", n_ctx=2048, n_batch=48, n_seq=3)
    try:
        before = e.stats.prompt_tokens
        par = e.logprobs(reqs)
        evaluated = e.stats.prompt_tokens - before
        assert e._parallel is not None and e._parallel.calls == 0  # counted into the engine's stats
        e.n_seq = 1
        e.llm.reset()
        seq = e.logprobs(reqs)
    finally:
        e.close()
    ref = tf_default.logprobs(reqs)
    # the five prompts of one query share their head: it ran once, not five times
    assert evaluated < sum(len(r.prompt_ids) + 1 for r in reqs) - 3 * 20
    worst_par = worst_seq = 0.0
    for p, q, t in zip(par, seq, ref, strict=True):
        assert len(p.steps) == len(q.steps) == 2
        for sp, sq, st in zip(p.steps, q.steps, t.steps, strict=True):
            assert set(sp) == set(st)
            worst_par = max(worst_par, max(abs(sp[k] - st[k]) for k in st))
            worst_seq = max(worst_seq, max(abs(sq[k] - st[k]) for k in st))
    assert worst_par < 0.6 and worst_par < 2 * worst_seq + 0.05, (worst_par, worst_seq)


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
