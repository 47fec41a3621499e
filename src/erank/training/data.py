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
from pathlib import Path
from typing import Any

from erank.engines import Engine, GenerateRequest, GenerateResult, LogprobRequest, LogprobResult
from erank.errors import InputError
from erank.training.config import DataConfig, TierConfig
from erank.training.sources import Collection, eval_row, load_source, read_jsonl
from erank.training.teacher import (
    _teacher_label,
    check_teacher,
    select_closest_to_mean,
)

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
        from erank.engines import HFTokenizer

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
        from erank.methods import create_method

        self.engine = _TokenizerOnlyEngine(tokenizer)
        # ERank's own prompt (truncate, template, chat template, direct suffix): built by the registry
        self.method: Any = create_method(
            "erank", self.engine, mode="direct" if style == "direct" else "reasoning", template=template
        )
        self.truncate_length = truncate_length
        self.hf = tokenizer

    def prompt(self, query: str, doc: str, instruction: str) -> str:
        q, _ = self.method.truncate(query, self.truncate_length)
        d, _ = self.method.truncate(doc, self.truncate_length)
        return self.method.build_prompt(q, d, instruction)

    def prompt_ids(self, query: str, doc: str, instruction: str) -> list[int]:
        """Token ids of :meth:`prompt`, as the engine tokenises a rendered prompt."""
        return self.engine.tokenizer.encode_prompt(self.prompt(query, doc, instruction))

    def encode(self, prompt: str, completion: str) -> tuple[list[int], list[int]]:
        """Token ids of prompt and completion (+ EOS), as the engine tokenises them."""
        return self.engine.tokenizer.encode_prompt(prompt), self.completion_ids(completion)

    def completion_ids(self, completion: str) -> list[int]:
        """Token ids of a completion (+ EOS)."""
        return self.engine.tokenizer.encode(completion) + [int(self.hf.eos_token_id)]


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
