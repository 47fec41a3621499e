from erank import Reranker
from erank.engines.transformers import TransformersEngine


def test_answering_tiny_model_writes_the_answer(answering_tiny_dir):
    r = Reranker(str(answering_tiny_dir), mode="reasoning", max_new_tokens=24)
    res = r.score("some new query", ["some unseen document", "another one"], "beir", return_reasoning=True)
    for s in res.scores:
        assert s.parsed, s.output
        assert s.label == 7
        assert 0.5 < s.probability <= 1.0
        assert s.reasoning == "short"


def test_tiny_qwen3_direct(tiny_qwen3_dir):
    eng = TransformersEngine(str(tiny_qwen3_dir))
    r = Reranker(engine=eng, mode="direct")
    res = r.score("q", ["a", "b b", "c c c"])
    assert len(res.scores) == 3
    assert all(s.distribution is not None and len(s.distribution) == 11 for s in res.scores)
