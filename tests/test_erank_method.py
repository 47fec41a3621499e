"""ERank on tiny random models at real architecture: modes, truncation, batching, determinism."""

import random

import pytest

from erank import ERank_Transformer, Reranker
from erank.engines.transformers import TransformersEngine
from erank.errors import InputError
from erank.methods.erank import ERankMethod

DOCS = [
    "Rust is a systems programming language focused on safety.",
    "Bread is baked from flour, water and yeast.",
    "The borrow checker enforces ownership rules at compile time in Rust.",
    "A short one.",
    "Cargo is the Rust package manager and build tool; it downloads dependencies and compiles packages.",
    "Tea is a drink.",
    "",
]


@pytest.fixture(scope="module")
def tiny_engine(tiny_qwen3_dir):
    return TransformersEngine(str(tiny_qwen3_dir))


def test_direct_mode_scores_are_s_times_p_with_a_full_distribution(tiny_engine):
    res = Reranker(engine=tiny_engine, mode="direct").score("what is rust", DOCS)
    assert [s.index for s in res.scores] == list(range(len(DOCS)))
    for s in res.scores:
        assert s.parsed and s.distribution is not None and len(s.distribution) == 11
        assert 0.0 <= sum(s.distribution) <= 1.0 + 1e-6
        assert s.label == max(range(11), key=lambda k: (s.distribution[k], -k))
        assert s.probability == pytest.approx(s.distribution[s.label])
        assert s.score == pytest.approx(s.label * s.probability)
        assert 0.0 <= s.expected_score <= 10.0
    assert res.usage.model_calls == len(DOCS) and res.usage.prompt_tokens > 0
    assert res.mode == "direct" and res.method == "erank"


def test_rerank_returns_the_official_shape_sorted(tiny_engine):
    docs = [{"content": d, "id": f"d{i}", "first_stage_score": float(i)} for i, d in enumerate(DOCS)]
    out = Reranker(engine=tiny_engine, mode="direct").rerank(
        "what is rust", docs, "beir", truncate_length=2048
    )
    assert sorted(r["id"] for r in out) == sorted(d["id"] for d in docs)
    # direct mode adds the expected score of the distribution beside ERank's rank_score
    assert all(set(r) == {"content", "id", "first_stage_score", "rank_score", "expected_score"} for r in out)
    scores = [r["rank_score"] for r in out]
    assert scores == sorted(scores, reverse=True)
    by_id = {d["id"]: d for d in docs}
    assert all(r["content"] == by_id[r["id"]]["content"] for r in out)


def test_text_key_and_extra_keys_are_kept(tiny_engine):
    out = Reranker(engine=tiny_engine).rerank("q", [{"text": "a doc", "title": "T", "id": 3}])
    assert out[0]["text"] == "a doc" and out[0]["title"] == "T" and out[0]["id"] == "3"


def test_scores_do_not_depend_on_order_or_batch_size(tiny_qwen3_dir):
    a = TransformersEngine(str(tiny_qwen3_dir), batch_tokens=100_000)
    b = TransformersEngine(str(tiny_qwen3_dir), batch_tokens=300, max_batch_size=2)
    base = Reranker(engine=a, mode="direct").score("what is rust", DOCS)
    perm = list(range(len(DOCS)))
    random.Random(3).shuffle(perm)
    other = Reranker(engine=b, mode="direct").score("what is rust", [DOCS[i] for i in perm])
    for j, i in enumerate(perm):
        assert other.scores[j].score == pytest.approx(base.scores[i].score, abs=1e-5)
        assert other.scores[j].distribution == pytest.approx(base.scores[i].distribution, abs=1e-5)
    assert [perm[j] for j in other.ranking] == base.ranking or _same_up_to_ties(base, other, perm)


def _same_up_to_ties(base, other, perm):
    got = [base.scores[perm[j]].score for j in other.ranking]
    return got == pytest.approx([base.scores[i].score for i in base.ranking], abs=1e-5)


def test_identical_documents_tie_and_keep_input_order(tiny_engine):
    docs = [{"content": "same text", "id": str(i)} for i in range(4)]
    out = Reranker(engine=tiny_engine, mode="direct").rerank("q", docs)  # direct: seconds, not minutes
    assert [r["id"] for r in out] == ["0", "1", "2", "3"]
    assert len({r["rank_score"] for r in out}) == 1


def test_truncation_cuts_query_and_document_to_n_tokens(tiny_engine):
    m = ERankMethod(tiny_engine, mode="direct")
    long_doc = "word " * 500
    res = m.rerank("q " * 300, [long_doc, "short"], truncate_length=32)
    assert res.scores[0].truncated and not res.scores[1].truncated
    full = m.rerank("q", ["short"], truncate_length=None)
    overhead = full.scores[0].prompt_tokens
    # query and document each at most 32 tokens (re-tokenising the cut text may merge a token or two)
    assert res.scores[0].prompt_tokens <= overhead + 2 * 32 + 2
    assert res.usage.truncated_documents == 1


def test_a_100000_word_document_is_truncated_and_scored(tiny_engine):
    huge = " ".join(f"token{i % 97}" for i in range(100_000))
    res = Reranker(engine=tiny_engine).score("q", [huge, "small"], truncate_length=512)
    assert res.scores[0].truncated and res.scores[0].prompt_tokens < 700


def test_reasoning_mode_parses_and_reads_p_at_the_answer(answering_tiny_dir):
    r = Reranker(str(answering_tiny_dir), mode="reasoning", max_new_tokens=24)
    res = r.score("an unseen query", ["doc one", "doc two"], return_reasoning=True)
    for s in res.scores:
        assert s.parsed and s.label == 7
        assert s.score == pytest.approx(7 * s.probability)
        assert s.reasoning == "short" and s.output.endswith("</answer>")
        assert s.generated_tokens > 0 and s.distribution is None
    assert res.usage.generated_tokens == sum(s.generated_tokens for s in res.scores)
    # P(s) recorded during generation equals a separate forward pass over prompt + text up to the answer.
    from erank.engines.base import GenerateRequest, GenerateResult
    from erank.scoring import parse_answer

    m = r.method
    prompt = r.engine.tokenizer.encode_prompt(m.build_prompt("an unseen query", "doc one", res.instruction))
    g = r.engine.generate([GenerateRequest(prompt, 24, ["</answer>"], m._all_score_ids)])[0]
    label, at = parse_answer(g.text)
    recorded = m._answer_probability(prompt, g, label, at)
    forward = m._answer_probability(
        prompt, GenerateResult(g.token_ids, g.text, g.finish_reason, []), label, at
    )
    assert recorded == pytest.approx(res.scores[0].probability, abs=1e-6)
    assert recorded == pytest.approx(forward, abs=1e-4)


def test_reasoning_budget_exhausted_is_unparsed_and_scored_zero(tiny_engine):
    res = Reranker(engine=tiny_engine, mode="reasoning", max_new_tokens=4).score(
        "q", ["a", "b"], return_reasoning=True
    )
    for s in res.scores:
        assert not s.parsed and s.score == 0.0 and s.label is None
    assert res.usage.unparsed == 2


def test_official_example_code_runs_with_only_the_import_changed(answering_tiny_dir):
    # from the official example, with `from erank import ERank_Transformer` as the only change
    reranker = ERank_Transformer(str(answering_tiny_dir), max_new_tokens=24)
    query = "I am happy"
    instruction = "Retrieval the relevant passage for the given query."
    docs = [
        {"content": "excited", "first_stage_score": 46.7},
        {"content": "sad", "first_stage_score": 1.5},
        {"content": "peaceful", "first_stage_score": 2.3},
    ]
    results = reranker.rerank(query, docs, instruction, truncate_length=2048)
    assert len(results) == 3 and all(r["rank_score"] > 6.0 for r in results)
    from erank import hybrid_scores

    hybrid = hybrid_scores(results, alpha=0.2)
    assert [h["content"] for h in hybrid][0] == "excited"


def test_llama_architecture_works_too(tiny_llama_dir):
    res = Reranker(str(tiny_llama_dir), mode="direct").score("q", ["a", "b"])
    assert len(res.scores) == 2


def test_zero_to_three_scale(tiny_engine):
    res = Reranker(engine=tiny_engine, mode="direct", scale=3).score("q", ["a"])
    assert len(res.scores[0].distribution) == 4 and res.scores[0].label in range(4)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("query", "docs", "kwargs", "match"),
    [
        ("", ["a"], {}, "query is empty"),
        ("   ", ["a"], {}, "query is empty"),
        (None, ["a"], {}, "query must be a string"),
        (3, ["a"], {}, "query must be a string"),
        ("q", [1], {}, "document 0 must be a string or a dict"),
        ("q", [{"title": "x"}], {}, "without a 'content'"),
        ("q", [{"content": 5}], {}, "'content' must be a string"),
        ("q", "a single string", {}, "must be a list"),
        ("q", ["a"], {"truncate_length": -1}, "truncate_length must be a positive integer"),
        ("q", ["a"], {"truncate_length": 1.5}, "truncate_length must be a positive integer"),
        ("q", ["a"], {"instruction": "bright/biolgy"}, "unknown instruction name"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_engine, query, docs, kwargs, match):
    r = Reranker(engine=tiny_engine)
    instruction = kwargs.pop("instruction", None)
    with pytest.raises(InputError, match=match):
        r.rerank(query, docs, instruction, **kwargs)


def test_empty_document_list_gives_an_empty_result(tiny_engine):
    assert Reranker(engine=tiny_engine).rerank("q", []) == []


def test_bad_mode_and_top_k(tiny_engine):
    with pytest.raises(InputError, match="mode must be"):
        Reranker(engine=tiny_engine, mode="fast")
    with pytest.raises(InputError, match="top_k"):
        Reranker(engine=tiny_engine, mode="direct").rerank("q", ["a"], top_k=-1)
    assert len(Reranker(engine=tiny_engine, mode="direct").rerank("q", ["a", "b", "c"], top_k=2)) == 2
