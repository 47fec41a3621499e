"""Teacher labels (spec 3.1): ``k`` seeded, sampled runs of a teacher reranker per pair, the run
closest to the runs' mean kept."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from erank.errors import InputError
from erank.training.config import DataConfig, TeacherConfig

__all__ = ["SAMPLING_ENGINES", "check_teacher", "select_closest_to_mean"]

logger = logging.getLogger(__name__)


def select_closest_to_mean(scores: Sequence[float]) -> int:
    """The index of the run whose score is closest to the mean of all runs (first on ties)."""
    if not scores:
        raise InputError("no teacher runs to choose from")
    mean = sum(scores) / len(scores)
    return min(range(len(scores)), key=lambda i: (abs(scores[i] - mean), i))


#: Engines whose reasoning-mode teacher runs can be sampled (the erank engines decode greedily).
SAMPLING_ENGINES = ("transformers", "vllm")


def _teacher_prompt_ids(teacher: Any, query: str, doc: str, instruction: str, truncate: int) -> list[int]:
    """The teacher's prompt for one pair, exactly as its method scores it."""
    method = teacher.method
    q, _ = method.truncate(query, truncate)
    d, _ = method.truncate(doc, truncate)
    return list(method.engine.tokenizer.encode_prompt(method.build_prompt(q, d, instruction)))


def _sample_transformers(
    engine: Any, prompt: list[int], k: int, temperature: float, max_new_tokens: int, seed: int
) -> list[tuple[str, int]]:
    """``k`` completions sampled at ``temperature`` (no top-k / top-p) by a transformers engine,
    each ``(text up to </answer>, generated tokens)``; the global torch RNG is left as it was."""
    import torch

    from erank.engines import token_id_list, trim_tokens_to_text
    from erank.scoring import ANSWER_STOP

    hf = engine.hf_tokenizer
    eos_ids = set(token_id_list(hf.eos_token_id) + token_id_list(engine.model.generation_config.eos_token_id))
    ids = torch.tensor([prompt], dtype=torch.long, device=engine.device)
    cuda = [engine.device] if engine.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.inference_mode(), engine._autocast():
        torch.manual_seed(seed)
        out = engine.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            num_beams=1,
            num_return_sequences=k,
            max_new_tokens=max_new_tokens,
            pad_token_id=engine.pad_id,
            stop_strings=[ANSWER_STOP],
            tokenizer=hf,
        )
    runs = []
    for row in out[:, len(prompt) :].cpu().tolist():
        gen = row[:max_new_tokens]
        for t, tid in enumerate(gen):
            if tid in eos_ids:
                gen = gen[:t]
                break
        text = engine.tokenizer.decode(gen)
        at = text.find(ANSWER_STOP)
        if at >= 0:
            text = text[: at + len(ANSWER_STOP)]
            gen = trim_tokens_to_text(engine.tokenizer.decode, gen, len(text))
        runs.append((text, len(gen)))
    return runs


def _sample_vllm(
    engine: Any, prompt: list[int], k: int, temperature: float, max_new_tokens: int, seed: int
) -> list[tuple[str, int]]:
    """``k`` completions sampled at ``temperature`` by the vLLM engine (one seed per run)."""
    from erank.scoring import ANSWER_STOP

    params = [
        engine._vllm.SamplingParams(
            temperature=temperature,
            seed=seed + i,
            max_tokens=max_new_tokens,
            stop=[ANSWER_STOP],
            include_stop_str_in_output=True,
        )
        for i in range(k)
    ]
    outs = engine._run([list(prompt)] * k, params)
    engine.stats.generated_tokens += sum(len(o.outputs[0].token_ids) for o in outs)
    return [(str(o.outputs[0].text), len(o.outputs[0].token_ids)) for o in outs]


def check_teacher(tcfg: TeacherConfig, engine: str) -> None:
    """Refuse a teacher (on the engine named ``engine``) whose ``runs`` would all be the same answer.

    Reasoning-mode runs are sampled generations, which only the ``transformers`` and ``vllm``
    engines offer here (the erank engines themselves decode greedily); direct-mode runs sample the
    score from the teacher's distribution, on any engine; a single run is the greedy answer.

    >>> check_teacher(TeacherConfig(model="m", engine="openai", runs=3), "openai")
    Traceback (most recent call last):
    erank.errors.InputError: teacher: 3 reasoning-mode runs need sampled generations, ...
    """
    if tcfg.mode == "reasoning" and tcfg.runs > 1 and engine not in SAMPLING_ENGINES:
        raise InputError(
            f"teacher: {tcfg.runs} reasoning-mode runs need sampled generations, which the {engine!r} "
            f"engine does not offer here (it decodes greedily: every run would be the same); use "
            f"engine: {' or '.join(SAMPLING_ENGINES)}, mode: direct, or runs: 1"
        )


def _teacher_label(
    teacher: Any, cfg: DataConfig, query: str, doc: str, instruction: str, rng: random.Random
) -> dict[str, Any] | None:
    """k independent teacher runs on one pair; the run closest to their mean, or None if all were dropped.

    ``direct`` mode: one forward pass gives the teacher's 0..10 distribution ``p``; each run draws
    a score from ``p ** (1 / temperature)`` with ``rng``. ``reasoning`` mode: each run is a
    completion sampled at ``temperature`` from a seed drawn from ``rng`` (a single run: the greedy
    answer); a run longer than ``max_output_tokens`` or without a parsable answer is dropped.
    Returns ``{"score", "reasoning", "runs"}`` (``runs``: the kept runs' scores, in order).
    """
    from erank.scoring import parse_answer, reasoning_text

    tcfg = cfg.teacher
    assert tcfg is not None
    runs: list[tuple[int, str]] = []
    if tcfg.mode == "direct":
        res = teacher.score(query, [doc], instruction, cfg.truncate_length).scores[0]
        weights = [max(0.0, float(p)) ** (1.0 / tcfg.temperature) for p in res.distribution or []]
        if sum(weights) <= 0:
            return None
        runs = [(label, "") for label in rng.choices(range(len(weights)), weights=weights, k=tcfg.runs)]
    elif tcfg.runs == 1:
        res = teacher.score(query, [doc], instruction, cfg.truncate_length, return_reasoning=True).scores[0]
        if res.parsed and res.label is not None and res.generated_tokens <= tcfg.max_output_tokens:
            runs.append((int(res.label), res.reasoning or ""))
    else:
        check_teacher(tcfg, teacher.engine.name)
        sample = _sample_vllm if teacher.engine.name == "vllm" else _sample_transformers
        prompt = _teacher_prompt_ids(teacher, query, doc, instruction, cfg.truncate_length)
        scale = int(getattr(teacher.method, "scale", 10))
        seed = rng.randrange(2**31)
        for text, n_tokens in sample(
            teacher.engine, prompt, tcfg.runs, tcfg.temperature, tcfg.max_output_tokens, seed
        ):
            label, _ = parse_answer(text, scale)
            if label is not None and n_tokens <= tcfg.max_output_tokens:
                runs.append((label, reasoning_text(text)))
    if not runs:
        return None
    best = select_closest_to_mean([r[0] for r in runs])
    return {"score": runs[best][0], "reasoning": runs[best][1], "runs": [r[0] for r in runs]}
