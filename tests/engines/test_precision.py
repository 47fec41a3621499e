"""The transformers engine's precision (issue 15): auto bf16 on CPUs with bf16 units, the override,
bf16 matrix products with everything else in float32, the LoRA merged at load, and bf16 agreeing
with fp32 on the real default model.

On a CPU without bf16 units torch's bf16 matrix product has no hardware path (tens of times
slower than fp32), so the real-model comparison runs the bf16 weights under
:class:`EmulatedBF16` there (the same rounding, fp32 kernels); on a CPU with bf16 units it runs
the real kernels.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import erank.engines.precision as precision
from erank.engines.base import LogprobRequest
from erank.engines.precision import BF16Linear, EmulatedBF16, cpu_has_bf16, resolve_dtype
from erank.engines.transformers import TransformersEngine
from erank.errors import InputError

CPU = torch.device("cpu")
#: bf16 may swap two documents whose fp32 expected scores (0-10) differ by less than this
TOLERANCE = 0.1


@pytest.fixture
def no_dtype_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The engine's own choice: ``ERANK_DTYPE=auto``, no ``ERANK_CPU_BF16`` (tests/conftest.py sets fp32)."""
    monkeypatch.setenv("ERANK_DTYPE", "auto")  # setenv: restored afterwards even where unset before
    monkeypatch.delenv("ERANK_CPU_BF16", raising=False)
    return monkeypatch


def _dtypes(engine: TransformersEngine) -> tuple[torch.dtype, torch.dtype, torch.dtype]:
    """(a decoder layer's weight, the input embeddings, the output head) dtypes."""
    model = engine.model
    layer = next(p for n, p in model.named_parameters() if "layers.0" in n and n.endswith("proj.weight"))
    return layer.dtype, model.get_input_embeddings().weight.dtype, model.get_output_embeddings().weight.dtype


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert not cpu_has_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_has_bf16(str(info))
    assert not cpu_has_bf16(str(tmp_path / "absent"))


def test_auto_follows_the_cpu_flag(tiny_llama_dir: Path, no_dtype_env: pytest.MonkeyPatch) -> None:
    # this machine, as it is
    assert resolve_dtype("auto", CPU) == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    # a CPU with bf16 units: the layers' products on bf16 weights; embeddings and head fp32, tied
    no_dtype_env.setattr(precision, "cpu_has_bf16", lambda: True)
    bf16 = TransformersEngine(str(tiny_llama_dir), device="cpu")
    assert bf16.dtype == torch.bfloat16 and not bf16.cpu_autocast
    assert _dtypes(bf16) == (torch.bfloat16, torch.float32, torch.float32)
    assert isinstance(bf16.model.model.layers[0].mlp.down_proj, BF16Linear)
    assert bf16.model.get_output_embeddings().weight is bf16.model.get_input_embeddings().weight
    # one without: plain fp32, the head still tied
    no_dtype_env.setattr(precision, "cpu_has_bf16", lambda: False)
    fp32 = TransformersEngine(str(tiny_llama_dir), device="cpu")
    assert fp32.dtype == torch.float32 and _dtypes(fp32) == (torch.float32,) * 3
    assert fp32.model.get_output_embeddings().weight is fp32.model.get_input_embeddings().weight


def test_the_override_wins_over_the_cpu_flag(tiny_qwen3_dir: Path, no_dtype_env: pytest.MonkeyPatch) -> None:
    no_dtype_env.setattr(precision, "cpu_has_bf16", lambda: True)
    for given in ("float32", "fp32", "FLOAT32", torch.float32):
        assert resolve_dtype(given, CPU) == torch.float32
    for kwargs in ({"dtype": "float32"}, {"cpu_bf16": False}):
        engine = TransformersEngine(str(tiny_qwen3_dir), device="cpu", **kwargs)  # type: ignore[arg-type]
        assert engine.dtype == torch.float32 and _dtypes(engine)[0] == torch.float32, kwargs
    no_dtype_env.setenv("ERANK_DTYPE", "float32")  # what --dtype float32 sets
    assert resolve_dtype("auto", CPU) == torch.float32 and resolve_dtype("bfloat16", CPU) == torch.bfloat16
    no_dtype_env.setenv("ERANK_DTYPE", "auto")
    no_dtype_env.setattr(precision, "cpu_has_bf16", lambda: False)
    engine = TransformersEngine(str(tiny_qwen3_dir), device="cpu", dtype="bfloat16")
    assert engine.dtype == torch.bfloat16 and _dtypes(engine)[0] == torch.bfloat16
    with pytest.raises(InputError, match="dtype must be one of"):
        resolve_dtype("float8", CPU)


def test_the_dtype_option_reaches_the_engine(no_dtype_env: pytest.MonkeyPatch) -> None:
    """``--dtype`` is a shared runtime option: every command that takes ``--threads`` takes it, and
    the preflight hands it to the engine's ``auto`` (through ``ERANK_DTYPE``, so workers see it)."""
    from erank.cli import build_parser
    from erank.commands.options import preflight

    args = build_parser().parse_args(["rerank", "--query", "q", "--docs", "-", "--dtype", "float32"])
    no_dtype_env.setattr(precision, "cpu_has_bf16", lambda: True)
    assert resolve_dtype(None, CPU) == torch.bfloat16
    preflight(args)
    assert resolve_dtype(None, CPU) == torch.float32
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rerank", "--query", "q", "--docs", "-", "--dtype", "float8"])
    serve = build_parser().parse_args(["serve", "--dtype", "bfloat16"])
    assert serve.dtype == "bfloat16"


def test_a_model_passed_in_is_never_converted(tiny_qwen3_dir: Path, no_dtype_env: pytest.MonkeyPatch) -> None:
    """A model under training (``model_obj``) keeps its fp32 weights; bf16 runs it under autocast."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir)
    tok = AutoTokenizer.from_pretrained(tiny_qwen3_dir)
    engine = TransformersEngine(model_obj=model, tokenizer_obj=tok, device="cpu", dtype="bfloat16")
    assert engine.cpu_autocast and all(p.dtype == torch.float32 for p in model.parameters())
    engine = TransformersEngine(model_obj=model, tokenizer_obj=tok, device="cpu", dtype="float32")
    assert not engine.cpu_autocast


def test_bf16_logprobs_are_float32_and_close(tiny_llama_dir: Path, no_dtype_env: pytest.MonkeyPatch) -> None:
    fp32 = TransformersEngine(str(tiny_llama_dir), device="cpu", dtype="float32")
    bf16 = TransformersEngine(str(tiny_llama_dir), device="cpu", dtype="bfloat16")
    prompt = fp32.tokenizer.encode_prompt("is the sky blue? answer with a number from 0 to 10")
    ids = list(range(15, 26))
    with torch.inference_mode():
        logits = bf16.model(input_ids=torch.tensor([prompt]), logits_to_keep=1).logits
    assert logits.dtype == torch.float32  # the head runs in fp32: log-softmax is fp32 end to end
    (a,), (b,) = fp32.logprobs([LogprobRequest(prompt, ids)]), bf16.logprobs([LogprobRequest(prompt, ids)])
    diffs = [abs(a.steps[0][t] - b.steps[0][t]) for t in ids]
    assert 0 < max(diffs) < 0.05  # bf16 rounding shows, and stays small


def test_the_emulator_gives_the_real_bf16_engine_s_logprobs(
    tiny_llama_dir: Path, no_dtype_env: pytest.MonkeyPatch
) -> None:
    fp32 = TransformersEngine(str(tiny_llama_dir), device="cpu", dtype="float32")
    bf16 = TransformersEngine(str(tiny_llama_dir), device="cpu", dtype="bfloat16")
    prompts = [fp32.tokenizer.encode_prompt(t) for t in ("is the sky blue?", "a much longer prompt " * 6)]
    ids = list(range(15, 40))
    reqs = [LogprobRequest(p, ids, extension=[17]) for p in prompts]
    exact, real = fp32.logprobs(reqs), bf16.logprobs(reqs)
    with EmulatedBF16():
        emulated = bf16.logprobs(reqs)

    def gap(x: list, y: list) -> float:  # type: ignore[type-arg]
        return max(
            abs(u.steps[k][t] - v.steps[k][t]) for u, v in zip(x, y, strict=True) for k in (0, 1) for t in ids
        )

    assert gap(emulated, real) < 0.1 * gap(exact, real)


def test_the_emulator_rounds_as_the_bf16_kernels_do() -> None:
    torch.manual_seed(0)
    x, w = torch.randn(64, 576).bfloat16(), (torch.randn(1536, 576) * 0.05).bfloat16()
    with EmulatedBF16():
        emulated = F.linear(x, w)
    real, exact = F.linear(x, w), F.linear(x.float(), w.float())
    assert emulated.dtype == torch.bfloat16
    assert (emulated == real).float().mean() > 0.999  # the same rounding, up to fp32 summation order
    assert (real.float() != exact).float().mean() > 0.5  # and the rounding is there
    q, k, v = (torch.randn(2, h, 40, 64).bfloat16() for h in (6, 2, 2))
    mask = torch.ones(2, 1, 40, 40, dtype=torch.bool).tril()
    mask[0, :, :, :7] = False  # left padding: rows with nothing to attend to
    for kw in ({"attn_mask": mask}, {"is_causal": True}):
        with EmulatedBF16():
            emulated = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kw)
        real = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kw)
        exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), enable_gqa=True, **kw)
        err_real = (real.float() - exact).abs().max()
        assert emulated.dtype == torch.bfloat16 and not emulated.isnan().any()
        assert (emulated.float() - exact).abs().max() <= 2 * err_real


# ---------------------------------------------------------------------------- the real default model


@pytest.fixture(scope="module")
def default_engines() -> Iterator[dict[str, TransformersEngine]]:
    yield {d: TransformersEngine(None, device="cpu", dtype=d) for d in ("float32", "bfloat16")}


def _bf16_kernels() -> contextlib.AbstractContextManager[object]:
    """The real bf16 kernels where the CPU has bf16 units, else the emulator (the same rounding)."""
    return contextlib.nullcontext() if cpu_has_bf16() else EmulatedBF16()


@pytest.mark.slow
def test_the_shipped_adapter_is_merged_at_load(
    default_engines: dict[str, TransformersEngine], smollm2_dir: Path
) -> None:
    """W = W_base + (alpha / r) B A in the loaded weights, merged in fp32 before the bf16 cast;
    no LoRA module is left to run per pair."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from erank.models import embedded_adapter_dir

    folder = embedded_adapter_dir()
    cfg = json.loads((folder / "adapter_config.json").read_text())
    lora = load_file(str(folder / "adapter_model.safetensors"))
    name = next(k for k in lora if ".lora_A." in k and "layers.29.mlp.down_proj" in k).split(".lora_A.")[0]
    name = name.removeprefix("base_model.model.")
    a, b = (
        lora[next(k for k in lora if f"{name}.lora_A." in k)],
        lora[next(k for k in lora if f"{name}.lora_B." in k)],
    )
    (weights_file,) = list(smollm2_dir.glob("*.safetensors"))
    with safe_open(str(weights_file), "pt") as f:
        base = f.get_tensor(f"{name}.weight").float()
    want = base + float(cfg["lora_alpha"]) / float(cfg["r"]) * (b.float() @ a.float())
    for dtype, engine in default_engines.items():
        model = engine.model
        assert not [n for n, _ in model.named_modules() if "lora" in n.lower()]
        got = dict(model.named_parameters())[f"{name}.weight"]
        assert not torch.allclose(base, want, atol=1e-4)  # the adapter changes this layer
        if dtype == "float32":
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        else:
            assert torch.equal(got, want.to(torch.bfloat16))  # merged in fp32, rounded once


#: (query, documents, the obvious answer's index): few tokens, the cost here is FLOPs per token
CASES = [
    (
        "what is the capital of france",
        [
            "Bananas are a yellow fruit rich in potassium.",
            "Paris is the capital and largest city of France.",
            "The Amazon is the largest rainforest on Earth.",
        ],
        1,
    ),
    (
        "symptoms of dehydration",
        [
            "Signs of dehydration include thirst, dark urine, dizziness, dry mouth and fatigue.",
            "The Eiffel Tower was completed in 1889.",
            "A sonnet is a poem of fourteen lines.",
        ],
        0,
    ),
]


@pytest.mark.slow
def test_bf16_ranks_the_real_default_model_as_fp32_does(
    default_engines: dict[str, TransformersEngine],
) -> None:
    from erank import Reranker

    fp32, bf16 = (Reranker(engine=default_engines[d]) for d in ("float32", "bfloat16"))
    for query, docs, good in CASES:
        a = fp32.score(query, docs, "beir")
        with _bf16_kernels():
            b = bf16.score(query, docs, "beir")
        assert a.ranking[0] == b.ranking[0] == good, (query, a.ranking, b.ranking)
        # the off-topic documents are near-ties (expected scores ~0.02 apart by 1e-3): bf16 may swap
        # those, and only those (the tolerance of docs/benchmarks.md, issue 15)
        fp = [s.expected_score for s in a.scores]
        for i in range(len(docs)):
            for j in range(len(docs)):
                if fp[i] - fp[j] >= TOLERANCE:
                    assert b.ranking.index(i) < b.ranking.index(j), (query, fp, b.ranking)
        for x, y in zip(a.scores, b.scores, strict=True):
            assert y.label == x.label, query
            assert abs(y.expected_score - x.expected_score) < 0.3, query  # 0-10 scale
            assert abs(math.log(y.distribution[x.label]) - math.log(x.distribution[x.label])) < 0.15, query
