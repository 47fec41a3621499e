"""Every engine that runs here gives the same ranking on the same query and documents.

Tolerance (see docs/engines.md): the default model is a Q4_1 GGUF. The transformers engine
de-quantizes those same 4-bit weights to fp32 exactly; llama.cpp multiplies them with activations
quantized to 8 bits per block of 32 (Q8_1), about 2^-8 relative error per element, accumulated
over 30 layers. On the label probabilities P(s) that is measured at up to ~0.13 nats; the
tolerance is 0.25 nats on log P(s) of the chosen label (|P_a/P_b - 1| < 28%), the same label, and
the same ranking on documents whose scores are apart by more than that. The OpenAI-compatible
server runs the same llama.cpp code as the llama.cpp engine, but evaluates every prompt from an
empty cache while the engine reuses the shared prefix: the prompt is split into different decode
batches, llama.cpp picks different kernels (vector dot vs. tiled GEMM, both on Q8_1 activations),
and the rounding differs (measured 0.034 nats). Between those two the tolerance is 0.1 nats.
"""

from __future__ import annotations

import math

import pytest

from erank import Reranker

from .conftest import DOCS, QUERY

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

pytestmark = pytest.mark.slow

LOG_TOL = 0.25
SAME_KERNELS_LOG_TOL = 0.1


def test_transformers_llamacpp_openai_agree(tf_default, llamacpp_default, llama_server, smollm2_dir) -> None:  # noqa: ANN001
    tf = Reranker(engine=tf_default, mode="direct").score(QUERY, DOCS)
    lc = Reranker(engine=llamacpp_default, mode="direct").score(QUERY, DOCS)
    oa_engine = {"base_url": llama_server, "tokenizer": str(smollm2_dir), "concurrency": 4}
    oa = Reranker("smollm2", engine="openai", mode="direct", engine_kwargs=oa_engine).score(QUERY, DOCS)
    assert tf.ranking == lc.ranking == oa.ranking
    for a, b, c in zip(tf.scores, lc.scores, oa.scores, strict=True):
        assert a.label == b.label == c.label
        assert abs(math.log(a.probability) - math.log(b.probability)) < LOG_TOL
        assert abs(math.log(c.probability) - math.log(b.probability)) < SAME_KERNELS_LOG_TOL
    assert [s.prompt_tokens for s in tf.scores] == [s.prompt_tokens for s in lc.scores]
