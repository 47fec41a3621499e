"""Training data for ERank (spec 3.1): per query 1 positive and N-1 negatives, labelled 0..10.

Negatives are drawn from rank tiers of a first stage (default: 9 from the top 10, 6 from ranks
11-100, 4 from 101-1000; a tier with too few candidates is topped up from the next ones). Labels
come from a teacher LLM through an erank engine (k independent, seeded, sampled runs per pair, the
run closest to the runs' mean kept, outputs over the length limit dropped) or, without a teacher,
from the graded judgements through :func:`grade_to_score`. A pair dropped (no teacher run left, or
longer than ``cutoff``) leaves its query's group one document shorter; when that pair is the
query's positive the whole query is dropped, so that no group is left without its positive.

Prompts are exactly what :class:`~erank.methods.erank.ERankMethod` scores at inference: the same
template, truncation and chat template; ``direct`` targets are the completion after
``DIRECT_SUFFIX`` (``"7</answer>"``), ``reasoning`` targets ``<think>...</think><answer>7</answer>``.

>>> grade_to_score(2, max_grade=3)
7
>>> select_closest_to_mean([3, 8, 7])
2
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erank.engines.base import Engine, GenerateRequest, GenerateResult, LogprobRequest, LogprobResult
from erank.errors import DataFormatError, InputError
from erank.prompts import resolve_instruction
from erank.training.config import DataConfig, SourceConfig, TeacherConfig, TierConfig

__all__ = [
    "Collection",
    "load_source",
    "grade_to_score",
    "select_closest_to_mean",
    "sample_group",
    "target_text",
    "PromptBuilder",
    "build_dataset",
    "read_jsonl",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- collections
@dataclass
class Collection:
    """Queries, documents, graded judgements and a first-stage ranking per query."""

    name: str
    queries: dict[str, str]
    docs: dict[str, str]
    qrels: dict[str, dict[str, int]]
    candidates: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    instruction: str = ""
    max_grade: int = 1


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a malformed line raises :class:`DataFormatError` naming it."""
    rows = []
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"{p} does not exist")
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{p}, line {n}: not JSON ({exc.msg})") from exc
    return rows


def _read_beir(src: SourceConfig) -> Collection:
    root = src.path
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        if not (root / name).is_file():
            raise DataFormatError(f"source {src.name!r}: {root / name} is missing (BEIR layout expected)")
    docs = {
        str(r["_id"]): f"{r.get('title', '')} {r.get('text', '')}".strip()
        for r in read_jsonl(root / "corpus.jsonl")
    }
    queries = {str(r["_id"]): str(r["text"]) for r in read_jsonl(root / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with (root / "qrels/test.tsv").open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if n == 1 and parts[0] == "query-id":
                continue
            if len(parts) != 3:
                raise DataFormatError(f"{root / 'qrels/test.tsv'}, line {n}: expected 3 tab-separated fields")
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return Collection(src.name, queries, docs, qrels)


def _bm25(coll: Collection, depth: int, qids: Sequence[str]) -> None:
    from erank.errors import require

    bm25s: Any = require("bm25s", "training", "BM25 candidates for BEIR-layout sources")
    ids = list(coll.docs)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([coll.docs[i] for i in ids], stopwords="en", show_progress=False), show_progress=False
    )
    k = min(depth, len(ids))
    res, scores = retriever.retrieve(
        bm25s.tokenize([coll.queries[q] for q in qids], stopwords="en", show_progress=False),
        k=k,
        show_progress=False,
    )
    for row, q in enumerate(qids):
        coll.candidates[q] = [(ids[int(j)], float(s)) for j, s in zip(res[row], scores[row], strict=True)]


def _read_trec_dl(src: SourceConfig) -> Collection:
    assert src.candidates is not None and src.qrels is not None
    cand_path = src.path / src.candidates
    qrels_path = src.path / src.qrels
    if not cand_path.is_file():
        raise DataFormatError(f"source {src.name!r}: candidate file {cand_path} is missing")
    if not qrels_path.is_file():
        raise DataFormatError(f"source {src.name!r}: qrels file {qrels_path} is missing")
    try:
        entries = json.loads(cand_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{cand_path}: not a rank_llm candidate JSON ({exc.msg})") from exc
    queries: dict[str, str] = {}
    docs: dict[str, str] = {}
    cands: dict[str, list[tuple[str, float]]] = {}
    for e in entries:
        hits = e.get("hits") or []
        if not hits:
            continue
        qid = str(hits[0]["qid"])
        queries[qid] = str(e["query"])
        cands[qid] = []
        for h in hits:
            docs[str(h["docid"])] = str(h["content"])
            cands[qid].append((str(h["docid"]), float(h["score"])))
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise DataFormatError(f"{qrels_path}, line {n}: expected 'qid 0 docid grade'")
            qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
    return Collection(src.name, queries, docs, qrels, cands)


def eval_row(source: str, coll: Collection, qid: str, depth: int) -> dict[str, Any]:
    """One held-out query of ``eval.jsonl``: its first-stage top ``depth`` with text, and its qrels."""
    cands = [
        {"docid": d, "content": coll.docs[d], "score": s}
        for d, s in coll.candidates.get(qid, [])[:depth]
        if d in coll.docs
    ]
    return {
        "qid": f"{source}/{qid}",
        "query": coll.queries[qid],
        "instruction": coll.instruction,
        "candidates": cands,
        "qrels": dict(coll.qrels.get(qid, {})),
    }


def load_source(src: SourceConfig) -> Collection:
    """Load one configured collection with its judgements and first-stage candidates."""
    coll = _read_beir(src) if src.format == "beir" else _read_trec_dl(src)
    coll.instruction = resolve_instruction(src.instruction)
    judged = [q for q in coll.queries if q in coll.qrels]
    if src.max_queries is not None:
        judged = judged[: src.max_queries]
    coll.queries = {q: coll.queries[q] for q in judged}
    if src.format == "beir":
        _bm25(coll, src.depth, judged)
    coll.max_grade = (
        src.max_grade or max((g for q in coll.qrels.values() for g in q.values()), default=1) or 1
    )
    return coll


# ---------------------------------------------------------------------------- labels
def grade_to_score(grade: int | None, max_grade: int, grade_map: dict[int, int] | None = None) -> int:
    """The 0..10 target of a judged grade (used when no teacher labels the pairs).

    Default mapping: ``round(10 * grade / max_grade)`` (so 0-3 grades give 0, 3, 7, 10 and binary
    judgements 0, 10); an unjudged document (``None``) or a negative grade gives 0. A config's
    ``grade_map`` replaces it (unlisted grades fall back to the default).

    >>> [grade_to_score(g, 3) for g in (None, 0, 1, 2, 3)]
    [0, 0, 3, 7, 10]
    >>> grade_to_score(1, 1, {1: 8})
    8
    """
    if grade is None or grade <= 0:
        return 0 if grade_map is None or grade is None else grade_map.get(grade, 0)
    if grade_map is not None and grade in grade_map:
        return int(grade_map[grade])
    return int(min(10, round(10 * grade / max(1, max_grade))))


def select_closest_to_mean(scores: Sequence[float]) -> int:
    """The index of the run whose score is closest to the mean of all runs (first on ties)."""
    if not scores:
        raise InputError("no teacher runs to choose from")
    mean = sum(scores) / len(scores)
    return min(range(len(scores)), key=lambda i: (abs(scores[i] - mean), i))


def target_text(score: int, style: str, reasoning: str = "") -> str:
    """The completion a model is trained to write after the prompt.

    >>> target_text(7, "direct")
    '7</answer>'
    >>> target_text(3, "reasoning", "off topic")
    '<think>off topic</think><answer>3</answer>'
    """
    if style == "direct":
        return f"{score}</answer>"
    return f"<think>{reasoning}</think><answer>{score}</answer>"


# ---------------------------------------------------------------------------- sampling
def sample_group(
    ranked: Sequence[str],
    positives: Sequence[str],
    judged_positive: set[str],
    tiers: Sequence[TierConfig],
    n_docs: int,
    rng: random.Random,
) -> list[tuple[str, str, int | None]]:
    """One positive and ``n_docs - 1`` negatives: ``[(docid, tier, first_stage_rank)]``.

    ``ranked`` is the first stage's order; negatives are never judged positive. Each tier takes
    ``count`` random documents of its rank range; a shortfall is topped up from the unused
    candidates in rank order.

    >>> sample_group(["a", "p", "b", "c"], ["p"], {"p"}, [TierConfig(name="t", start=1, end=2, count=1)],
    ...              3, random.Random(0))
    [('p', 'positive', 2), ('a', 't', 1), ('b', 'fill', 3)]
    """
    if not positives:
        raise InputError("a group needs at least one positive document")
    rank_of = {d: i + 1 for i, d in enumerate(ranked)}
    pos = rng.choice(list(positives))
    out: list[tuple[str, str, int | None]] = [(pos, "positive", rank_of.get(pos))]
    used = {pos}
    want = n_docs - 1
    for tier in tiers:
        pool = [d for d in ranked[tier.start - 1 : tier.end] if d not in judged_positive and d not in used]
        take = rng.sample(pool, min(tier.count, len(pool), want - (len(out) - 1)))
        take.sort(key=lambda d: rank_of[d])
        for d in take:
            out.append((d, tier.name, rank_of[d]))
            used.add(d)
    for d in ranked:
        if len(out) - 1 >= want:
            break
        if d not in judged_positive and d not in used:
            out.append((d, "fill", rank_of[d]))
            used.add(d)
    return out


# ---------------------------------------------------------------------------- prompts
class _TokenizerOnlyEngine(Engine):
    """An engine that only carries a tokenizer: lets ERankMethod build prompts without a model."""

    name = "tokenizer-only"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__()
        from erank.engines.transformers import HFTokenizer

        self.hf_tokenizer = tokenizer
        self.tokenizer = HFTokenizer(tokenizer)

    def logprobs(self, requests: Sequence[LogprobRequest]) -> list[LogprobResult]:  # pragma: no cover
        raise NotImplementedError("the tokenizer-only engine cannot run a model")

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:  # pragma: no cover
        raise NotImplementedError("the tokenizer-only engine cannot run a model")


def load_tokenizer(model: str | None) -> Any:
    """The HF tokenizer of a model folder, GGUF file or hub id (``None``: the default model)."""
    from transformers import AutoTokenizer

    from erank.models import base_folder, resolve_model

    spec = resolve_model(model)
    location = base_folder(spec)
    tok = AutoTokenizer.from_pretrained(location)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


class PromptBuilder:
    """ERank prompts exactly as :class:`~erank.methods.erank.ERankMethod` renders them.

    >>> pb = PromptBuilder(load_tokenizer(None), "direct")   # doctest: +SKIP
    >>> pb.prompt("q", "d", "Given a query, retrieval relevant passage.").endswith("<answer>")  # doctest: +SKIP
    True
    """

    def __init__(
        self, tokenizer: Any, style: str, truncate_length: int | None = 2048, template: str | None = None
    ) -> None:
        from erank.methods.erank import ERankMethod

        self.engine = _TokenizerOnlyEngine(tokenizer)
        self.method = ERankMethod(
            self.engine, mode="direct" if style == "direct" else "reasoning", template=template
        )
        self.truncate_length = truncate_length
        self.hf = tokenizer

    def prompt(self, query: str, doc: str, instruction: str) -> str:
        q, _ = self.method.truncate(query, self.truncate_length)
        d, _ = self.method.truncate(doc, self.truncate_length)
        return self.method.build_prompt(q, d, instruction)

    def encode(self, prompt: str, completion: str) -> tuple[list[int], list[int]]:
        """Token ids of prompt and completion (+ EOS), as the engine tokenises them."""
        return self.engine.tokenizer.encode_prompt(prompt), self.completion_ids(completion)

    def completion_ids(self, completion: str) -> list[int]:
        """Token ids of a completion (+ EOS)."""
        return self.engine.tokenizer.encode(completion) + [int(self.hf.eos_token_id)]


# ---------------------------------------------------------------------------- teacher
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

    from erank.engines.transformers import _trim_tokens_to_text
    from erank.methods.erank import ANSWER_STOP

    hf = engine.hf_tokenizer
    eos_ids = {int(t) for t in _ids(hf.eos_token_id) + _ids(engine.model.generation_config.eos_token_id)}
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
            gen = _trim_tokens_to_text(engine.tokenizer.decode, gen, len(text))
        runs.append((text, len(gen)))
    return runs


def _sample_vllm(
    engine: Any, prompt: list[int], k: int, temperature: float, max_new_tokens: int, seed: int
) -> list[tuple[str, int]]:
    """``k`` completions sampled at ``temperature`` by the vLLM engine (one seed per run)."""
    from erank.methods.erank import ANSWER_STOP

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


def _ids(x: Any) -> list[int]:
    if x is None:
        return []
    return [int(x)] if isinstance(x, int) else [int(v) for v in x]


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
    from erank.methods.erank import _reasoning_text
    from erank.scoring import parse_answer

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
                runs.append((label, _reasoning_text(text)))
    if not runs:
        return None
    best = select_closest_to_mean([r[0] for r in runs])
    return {"score": runs[best][0], "reasoning": runs[best][1], "runs": [r[0] for r in runs]}


# ---------------------------------------------------------------------------- build
def _split_queries(qids: list[str], fraction: float, rng: random.Random) -> set[str]:
    if fraction <= 0:
        return set()
    n = max(1, round(len(qids) * fraction))
    return set(rng.sample(qids, min(n, len(qids))))


def build_dataset(cfg: DataConfig) -> dict[str, Any]:
    """Build the training set of ``cfg`` and write it to ``cfg.output_dir``.

    Writes ``train.jsonl`` (one row per pair: ids, texts, ``prompt``, ``completion``, ``target``,
    grade, tier, first-stage rank), ``dataset/`` (the same as a Hugging Face ``datasets``
    dataset), ``eval.jsonl`` (held-out queries with their first-stage candidates and qrels) and
    ``params.json`` (the configuration and the counts). Returns the counts: ``queries`` and
    ``pairs`` written, ``skipped_no_positive`` (queries without a judged positive),
    ``dropped_long`` / ``dropped_teacher`` (pairs over ``cutoff`` / with no teacher run left),
    ``dropped_queries`` (queries dropped whole because their positive pair was dropped),
    ``eval_queries``.

    >>> from erank.training.config import load_config, DataConfig     # doctest: +SKIP
    >>> build_dataset(load_config("configs/train/toy-data.yaml", DataConfig))["pairs"]  # doctest: +SKIP
    240
    """
    from erank.errors import require

    if cfg.labels == "blend":
        from erank.training.blend import build_blend_dataset

        return build_blend_dataset(cfg)
    datasets: Any = require("datasets", "training", "writing the training set")
    t0 = time.time()
    rng = random.Random(cfg.seed)
    tok = load_tokenizer(cfg.tokenizer)
    builder = PromptBuilder(tok, cfg.target_style, cfg.truncate_length)
    teacher = None
    if cfg.labels == "teacher":
        from erank.reranker import Reranker

        assert cfg.teacher is not None
        check_teacher(cfg.teacher, cfg.teacher.engine)
        teacher = Reranker(
            cfg.teacher.model,
            engine=cfg.teacher.engine,
            mode=cfg.teacher.mode,
            max_new_tokens=cfg.teacher.max_output_tokens,
            engine_kwargs=cfg.teacher.engine_kwargs,
        )
    rows: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    # the teacher's own stream: the sampled groups do not depend on the teacher or its runs
    teacher_rng = random.Random(f"teacher-{cfg.seed}")
    stats = {
        "queries": 0,
        "pairs": 0,
        "skipped_no_positive": 0,
        "dropped_long": 0,
        "dropped_teacher": 0,
        "dropped_queries": 0,
    }
    for src in cfg.sources:
        coll = load_source(src)
        qids = list(coll.queries)
        held = set(qids) if src.name in cfg.eval_sources else _split_queries(qids, cfg.eval_fraction, rng)
        logger.info("%s: %d judged queries, %d held out for evaluation", src.name, len(qids), len(held))
        for qid in qids:
            judged = coll.qrels.get(qid, {})
            ranked = [d for d, _ in coll.candidates.get(qid, [])]
            first_score = dict(coll.candidates.get(qid, []))
            if qid in held:
                evals.append(eval_row(src.name, coll, qid, cfg.eval_candidates))
                continue
            positive_set = {d for d, g in judged.items() if g >= cfg.positive_min_grade and d in coll.docs}
            if not positive_set:
                stats["skipped_no_positive"] += 1
                continue
            group = sample_group(
                ranked, sorted(positive_set), positive_set, cfg.tiers, cfg.docs_per_query, rng
            )
            built = _build_group(
                cfg, src.name, qid, coll, group, first_score, builder, teacher, teacher_rng, stats
            )
            if built is None:
                stats["dropped_queries"] += 1
                continue
            rows.extend(built)
            stats["queries"] += 1
            stats["pairs"] += len(built)
    if not rows:
        raise InputError("no training pairs were built: check that the sources have judged positives")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "train.jsonl", rows)
    _write_jsonl(out / "eval.jsonl", evals)
    datasets.Dataset.from_list(rows).save_to_disk(str(out / "dataset"))
    stats["eval_queries"] = len(evals)
    params = {
        "config": json.loads(cfg.model_dump_json()),
        "counts": stats,
        "grade_mapping": "round(10 * grade / max_grade), unjudged 0"
        if cfg.grade_map is None
        else cfg.grade_map,
        "seconds": round(time.time() - t0, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "params.json").write_text(json.dumps(params, indent=2, default=str), encoding="utf-8")
    logger.info("wrote %d pairs of %d queries to %s", stats["pairs"], stats["queries"], out)
    return stats


def _build_group(
    cfg: DataConfig,
    source: str,
    qid: str,
    coll: Collection,
    group: list[tuple[str, str, int | None]],
    first_score: dict[str, float],
    builder: PromptBuilder,
    teacher: Any,
    teacher_rng: random.Random,
    stats: dict[str, int],
) -> list[dict[str, Any]] | None:
    """The rows of one query's group, or None when its positive (``group[0]``) is dropped.

    A pair is dropped when no teacher run is left or prompt + target exceed ``cutoff`` (counted in
    ``stats``); a dropped negative only shortens the group, a dropped positive drops the query
    (its negatives are then neither labelled nor counted).
    """
    query = coll.queries[qid]
    judged = coll.qrels.get(qid, {})
    shortest = len(builder.completion_ids(target_text(0, cfg.target_style)))
    out: list[dict[str, Any]] = []
    for docid, tier, rank in group:
        doc = coll.docs[docid]
        grade = judged.get(docid)
        prompt = builder.prompt(query, doc, coll.instruction)
        p_ids = builder.engine.tokenizer.encode_prompt(prompt)
        reasoning = ""
        runs: list[int] = []
        if len(p_ids) + shortest > cfg.cutoff:  # no target fits: not worth a teacher call
            completion = ""
        elif teacher is not None:
            lab = _teacher_label(teacher, cfg, query, doc, coll.instruction, teacher_rng)
            if lab is None:
                stats["dropped_teacher"] += 1
                if tier == "positive":
                    return None
                continue
            score, reasoning, runs = lab["score"], lab["reasoning"], lab["runs"]
            completion = target_text(score, cfg.target_style, reasoning)
        else:
            score = grade_to_score(grade, coll.max_grade, cfg.grade_map)
            completion = target_text(score, cfg.target_style, reasoning)
        if not completion or len(p_ids) + len(builder.completion_ids(completion)) > cfg.cutoff:
            stats["dropped_long"] += 1
            if tier == "positive":
                return None
            continue
        out.append(
            {
                "qid": f"{source}/{qid}",
                "docid": docid,
                "source": source,
                "query": query,
                "doc": doc,
                "instruction": coll.instruction,
                "prompt": prompt,
                "completion": completion,
                "target": score,
                "grade": -1 if grade is None else grade,
                "is_positive": tier == "positive",
                "tier": tier,
                "first_stage_rank": -1 if rank is None else rank,
                "first_stage_score": float(first_score.get(docid, 0.0)),
                "teacher_runs": runs,
                "style": cfg.target_style,
            }
        )
    return out


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
