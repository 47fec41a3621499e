"""Every method through the real transformers engine on tiny random models: mechanics and counting.

The tiny models are random, so nothing here asserts relevance; it asserts what a user relies on:
a full ranking consistent with the scores, the number of model calls each method's algorithm
implies, token counts equal to what the engine actually processed, repairs counted, and clear
errors for bad arguments.
"""

from __future__ import annotations

import pytest

from erank import Reranker
from erank.engines import create_engine
from erank.errors import InputError
from erank.methods import METHODS, create_method

QUERY = "what is the capital of France"
DOCS = [f"Document number {i} talks about topic {i}." for i in range(7)]


@pytest.fixture(scope="module")
def engine(tiny_qwen3_dir):
    return create_engine("transformers", tiny_qwen3_dir)


@pytest.fixture(scope="module")
def llama_engine(tiny_llama_dir):
    return create_engine("transformers", tiny_llama_dir)


def _run(engine, name, docs=DOCS, **kwargs):
    method = create_method(name, engine, **kwargs)
    before = (engine.stats.prompt_tokens, engine.stats.generated_tokens)
    result = method.rerank(QUERY, docs, "beir")
    delta = (engine.stats.prompt_tokens - before[0], engine.stats.generated_tokens - before[1])
    return method, result, delta


_CACHE: dict = {}


def _cached(engine, name):
    """One run per method with the SMALL arguments, shared by the tests of this module."""
    if name not in _CACHE:
        _CACHE[name] = _run(engine, name, **SMALL.get(name, {}))
    return _CACHE[name]


def _check_result(result, n):
    assert sorted(result.ranking) == list(range(n))
    ranked_scores = [result.scores[i].score for i in result.ranking]
    assert ranked_scores == sorted(ranked_scores, reverse=True)
    assert [s.index for s in result.scores] == list(range(n))
    rows = result.as_dicts()
    assert [r["content"] for r in rows] == [result.documents[i].content for i in result.ranking]


SMALL = {
    "rank1": {"max_new_tokens": 4},
    "listwise": {"max_new_tokens": 8, "window": 4, "step": 2},
    "first": {"window": 4, "step": 2},
    "pairwise": {"top_k": 1},
    "setwise": {"max_new_tokens": 4, "top_k": 1},
    "groupwise": {"group_size": 3, "max_new_tokens": 8},
}

#: model calls each algorithm implies for the 7 documents with the SMALL arguments
CALLS = {
    "erank": 7,
    "erank-0-3": 7,
    "yesno": 7,
    "rank1": 14,  # a generation and a (natural or forced) answer read per document
    "listwise": 3,  # windows (3, 7) (1, 5) (0, 3)
    "first": 3,
    "pairwise": 2 * 6,  # both orders of every comparison of one bubble pass
    "pairwise-allpairs": 2 * 21,
    "groupwise": 3,  # groups of 3, 3, 1
    "setwise": None,  # depends on the choices; checked below
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_ranks_all_documents_and_counts_its_cost(engine, name):
    method, result, (prompt_delta, gen_delta) = _cached(engine, name)
    _check_result(result, len(DOCS))
    assert result.method == method.name
    if CALLS[name] is not None:
        assert result.usage.model_calls == CALLS[name]
    # Usage counts every prompt token as if processed alone; the engine shares common prefixes,
    # so it processes at most that many. Generated tokens are exactly the engine's.
    assert result.usage.prompt_tokens >= prompt_delta > 0
    assert result.usage.generated_tokens == gen_delta
    assert result.usage.seconds > 0


def test_setwise_direct_calls_one_forward_pass_per_choice(engine):
    method, result, (_, gen_delta) = _run(engine, "setwise", mode="direct", top_k=2, num_child=2)
    assert result.usage.model_calls == method.last_counters["choices"]
    assert result.usage.generated_tokens == 0 == gen_delta
    assert result.mode == "direct"


def test_setwise_reasoning_forces_unparsed_choices_with_the_logits(engine):
    # A random model never writes <answer>[k]</answer>: every choice is read from the logits.
    method, result, _ = _cached(engine, "setwise")
    c = method.last_counters
    assert c["choices"] > 0 and c["forced_choices"] == c["choices"]
    assert result.usage.model_calls == 2 * c["choices"]


def test_listwise_repairs_and_counts_malformed_permutations(engine):
    method, result, _ = _cached(engine, "listwise")
    assert method.last_counters["windows"] == 3
    # Eight random tokens never spell a full permutation of four identifiers.
    assert method.last_counters["repaired_windows"] == 3
    _check_result(result, len(DOCS))


def test_rank1_forces_the_answer_when_reasoning_does_not_close(engine):
    method, result, _ = _cached(engine, "rank1")
    assert method.last_counters["forced_answers"] == len(DOCS)
    assert all(0.0 <= s.score <= 1.0 for s in result.scores)
    assert all(s.generated_tokens <= 4 for s in result.scores)


def test_yesno_scores_are_probabilities(engine):
    _, result, _ = _cached(engine, "yesno")
    assert all(0.0 < s.score < 1.0 and s.probability == s.score for s in result.scores)


def test_groupwise_unparsed_documents_score_zero_and_are_counted(engine):
    _, result, _ = _cached(engine, "groupwise")
    unparsed = [s for s in result.scores if not s.parsed]
    assert result.usage.unparsed == len(unparsed)
    assert all(s.score == 0.0 and s.label is None for s in unparsed)


def test_pairwise_allpairs_scores_sum_to_the_number_of_pairs(engine):
    _, result, _ = _cached(engine, "pairwise-allpairs")
    assert sum(s.score for s in result.scores) == pytest.approx(21.0)
    assert result.mode == "allpairs"


def test_methods_run_on_a_second_architecture(llama_engine):
    for name in ("yesno", "first"):
        _, result, _ = _run(llama_engine, name, **SMALL.get(name, {}))
        _check_result(result, len(DOCS))


def test_single_document_and_empty_list(engine):
    for name in ("listwise", "first", "pairwise", "setwise", "groupwise"):
        _, one, _ = _run(engine, name, docs=["only one"], **SMALL.get(name, {}))
        assert one.ranking == [0]
        _, none, _ = _run(engine, name, docs=[], **SMALL.get(name, {}))
        assert none.ranking == [] and none.usage.model_calls == 0


# ------------------------------------------------------------------------------------- prompts


def test_listwise_prompt_lists_every_passage_with_its_identifier(engine):
    method = create_method("listwise", engine)
    text = method.build_prompt("my query", ["alpha", "beta {doc}", "gamma"], "an instruction")
    assert "[1] alpha" in text and "[2] beta {doc}" in text and "[3] gamma" in text
    assert "3 passages" in text and "my query" in text and "an instruction" in text


def test_first_prompt_uses_single_token_letter_identifiers(engine):
    method = create_method("first", engine)
    text = method.build_prompt("q", ["alpha", "beta"], "i")
    assert "[A] alpha" in text and "[B] beta" in text
    assert all(len(engine.tokenizer.encode(c)) == 1 for c in "ABCDEFGHIJKLMNOPQRST")


def test_pairwise_setwise_groupwise_yesno_rank1_prompts(engine):
    p = create_method("pairwise", engine).build_prompt("q", "first doc", "second doc", "i")
    assert p.index('Passage A: "first doc"') < p.index('Passage B: "second doc"')
    s = create_method("setwise", engine).build_prompt("q", ["x", "y"], "i")
    assert "[1] x" in s and "<answer>[3]</answer>" in s
    g = create_method("groupwise", engine, max_score=3).build_prompt("q", ["x", "y"], "i")
    assert "0~3" in g and "[2] y" in g
    y = create_method("yesno", engine).build_prompt("q", "d", "i")
    assert y.endswith("<|im_start|>assistant\n") and '"yes" or "no"' in y
    r = create_method("rank1", engine).build_prompt("q", "d", "i")
    assert r.endswith("<think>")


def test_custom_template_text_is_used(engine):
    method = create_method("yesno", engine, template="Q={query} D={doc} I={instruction}. yes or no?")
    assert "Q=q D=d I=i. yes or no?" in method.build_prompt("q", "d", "i")


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("listwise", {"window": 1}, "window"),
        ("listwise", {"step": 0}, "step"),
        ("first", {"window": 27}, "26"),
        ("pairwise", {"variant": "bogus"}, "variant"),
        ("pairwise", {"top_k": 0}, "top_k"),
        ("setwise", {"num_child": 9}, "num_child"),
        ("setwise", {"mode": "fast"}, "mode"),
        ("rank1", {"max_new_tokens": 0}, "max_new_tokens"),
        ("groupwise", {"group_size": 0}, "group_size"),
        ("yesno", {"template": "no_such_template"}, "template"),
    ],
)
def test_bad_arguments_are_clear_input_errors(engine, name, kwargs, match):
    with pytest.raises(InputError, match=match):
        create_method(name, engine, **kwargs)


def test_bad_inputs_are_input_errors(engine):
    method = create_method("listwise", engine)
    with pytest.raises(InputError, match="query"):
        method.rerank("  ", ["d"])
    with pytest.raises(InputError, match="content"):
        method.rerank("q", [{"text_missing": 1}])


def test_reranker_front_door_with_methods(tiny_qwen3_dir):
    r = Reranker(tiny_qwen3_dir, method="first", window=4, step=2)
    docs = [{"content": d, "id": str(i), "first_stage_score": 10.0 - i} for i, d in enumerate(DOCS)]
    rows = r.rerank(QUERY, docs, "beir")
    assert sorted(row["id"] for row in rows) == [str(i) for i in range(7)]
    assert [row["rank_score"] for row in rows] == sorted((row["rank_score"] for row in rows), reverse=True)
    assert r.method.name == "first"
    r3 = Reranker(tiny_qwen3_dir, engine=r.engine, method="erank-0-3")
    res = r3.score(QUERY, DOCS[:2])
    assert res.method == "erank-0-3" and all(s.label is not None and 0 <= s.label <= 3 for s in res.scores)
    assert all(len(s.distribution or []) == 4 for s in res.scores)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_has_last_counters(engine, name):
    # docs/methods.md documents `method.last_counters` for every method: a dict, empty before the
    # first call, and fresh after each call (never the previous query's events).
    kwargs = {"window": 4, "step": 2} if name in ("listwise", "first") else {}
    if name in ("rank1", "setwise"):
        kwargs["max_new_tokens"] = 4
    method = create_method(name, engine, **kwargs)
    assert method.last_counters == {}
    method.rerank(QUERY, DOCS[:4], "beir", truncate_length=64)
    first = dict(method.last_counters)
    assert isinstance(first, dict) and all(isinstance(v, int) for v in first.values())
    method.rerank(QUERY, [], "beir")
    assert method.last_counters == {}  # reset: nothing happened for an empty list
    if name == "erank":
        assert first == {}
    if name == "listwise":
        assert first["windows"] >= 1


def test_reranker_erank_has_last_counters(tiny_qwen3_dir):
    r = Reranker(str(tiny_qwen3_dir), method="erank", mode="direct")
    r.score(QUERY, DOCS[:2])
    assert r.method.last_counters == {}
