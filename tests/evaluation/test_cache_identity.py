"""The score cache's identity of a reranker: every argument that changes scores changes it.

Two configurations of one method in one experiment must never share cached scores; the same
configuration built twice must share them (that is what makes a killed run resumable).
"""

from __future__ import annotations

import pytest

from erank import Reranker
from erank.datasets import load_collection
from erank.engines import create_engine
from erank.evaluation import Experiment, reranker_identity


@pytest.fixture(scope="module")
def engine(tiny_qwen3_dir):
    e = create_engine("transformers", tiny_qwen3_dir)
    yield e
    e.close()


#: (method, arguments of one configuration, arguments of another)
DIFFERENT = [
    ("listwise", {"window": 4}, {"window": 5}),
    ("listwise", {"window": 4, "step": 2}, {"window": 4, "step": 3}),
    ("listwise", {}, {"answer_prefix": "<think>\n\n</think>\n\n"}),
    ("first", {"window": 4, "step": 2}, {"window": 4, "step": 1}),
    ("pairwise", {"top_k": 1}, {"top_k": 2}),
    ("setwise", {"num_child": 2}, {"num_child": 3}),
    ("setwise", {"top_k": 1}, {"top_k": 2}),
    ("groupwise", {"group_size": 3}, {"group_size": 4}),
    ("yesno", {}, {"answer_prefix": "<think>\n\n</think>\n\n"}),
    ("erank", {"mode": "direct"}, {"mode": "direct", "rule": "expected"}),
]


@pytest.mark.parametrize(("name", "a", "b"), DIFFERENT)
def test_two_configurations_have_different_cache_identities(engine, name, a, b):
    first = reranker_identity(Reranker(engine=engine, method=name, **a))
    second = reranker_identity(Reranker(engine=engine, method=name, **b))
    assert first != second
    # the same configuration built again is the same identity (a resumed run finds its scores)
    assert reranker_identity(Reranker(engine=engine, method=name, **a)) == first


def test_identity_records_defaults_and_forwarded_arguments(engine):
    implicit = Reranker(engine=engine, method="listwise").identity()
    explicit = Reranker(engine=engine, method="listwise", window=20, step=10).identity()
    assert implicit == explicit and implicit["arguments"]["window"] == 20
    # a subclass that forwards to its parent records what the parent was given
    assert Reranker(engine=engine, method="erank-0-3").identity()["arguments"]["scale"] == 3
    allpairs = Reranker(engine=engine, method="pairwise-allpairs").identity()
    assert allpairs["arguments"]["variant"] == "allpairs"
    assert allpairs["model"] == engine.model_name and allpairs["engine"] == engine.name


def test_experiment_gives_each_listwise_configuration_its_own_scores(
    shared_data, engine, tmp_path, monkeypatch
):
    monkeypatch.setenv("ERANK_CACHE", str(tmp_path / "cache"))
    adi = load_collection(shared_data / "adi", beir_rule=False)
    small = {"method": "listwise", "max_new_tokens": 8, "step": 2}
    exp = Experiment(
        adi,
        {
            "window4": Reranker(engine=engine, window=4, **small),
            "window3": Reranker(engine=engine, window=3, **small),
        },
        first_stage="bm25",
        top_k=5,
        queries=2,
        alphas=(),
        sweep=(),
        cache=tmp_path / "scores.sqlite",
        progress=False,
    )
    res = exp.run()
    for name in ("window4", "window3"):
        lat = res.system(name).latency
        assert lat["pairs"] == 10
        assert lat["computed_pairs"] == 10 and lat["cached_pairs"] == 0, name
