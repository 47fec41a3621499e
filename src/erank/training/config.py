"""The YAML configurations of ``erank train data|sft|rl``, validated with pydantic.

Every field has a default (the paper's where it has one); a config file only names what it
changes. Unknown keys, wrong types and impossible values are rejected with one message that names
the file, the field and what to fix.

>>> from erank.training.config import SFTConfig
>>> SFTConfig(model="m", data="d", output_dir="o").lora.r
32
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from erank.errors import InputError

__all__ = [
    "TierConfig",
    "SourceConfig",
    "TeacherConfig",
    "DataConfig",
    "LoraConfig",
    "EvalConfig",
    "SFTConfig",
    "RewardConfig",
    "RLConfig",
    "load_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TierConfig(_Strict):
    """Negatives drawn from first-stage ranks ``start..end`` (1-based, inclusive)."""

    name: str
    start: int = Field(ge=1)
    end: int = Field(ge=1)
    count: int = Field(ge=0)

    @model_validator(mode="after")
    def _order(self) -> TierConfig:
        if self.end < self.start:
            raise ValueError(f"tier {self.name!r}: end ({self.end}) is before start ({self.start})")
        return self


def _default_tiers() -> list[TierConfig]:
    # 19 negatives (20 documents with the positive): spec 3.1's hard / medium / easy tiers.
    return [
        TierConfig(name="hard", start=1, end=10, count=9),
        TierConfig(name="medium", start=11, end=100, count=6),
        TierConfig(name="easy", start=101, end=1000, count=4),
    ]


class SourceConfig(_Strict):
    """One collection with judgements and a first stage.

    ``format``: ``beir`` (corpus.jsonl, queries.jsonl, qrels/test.tsv; the first stage is BM25
    over the corpus, computed with ``bm25s``) or ``trec-dl`` (a rank_llm candidate JSON as the
    first stage, a TREC qrels file).
    """

    name: str
    format: Literal["beir", "trec-dl"]
    path: Path
    candidates: Path | None = Field(None, description="trec-dl: the rank_llm JSON, relative to path")
    qrels: Path | None = Field(None, description="trec-dl: the qrels file, relative to path")
    instruction: str = "beir"
    max_queries: int | None = Field(None, ge=1)
    depth: int = Field(1000, ge=1, description="first-stage depth (BM25 top-k for beir)")
    max_grade: int | None = Field(None, ge=1, description="default: the largest grade in the qrels")
    unjudged_depth: int | None = Field(
        None,
        ge=1,
        description=(
            "labels: blend: the first stage's top N also gives negatives: its unjudged documents "
            "are grade 0 (collections whose qrels list only relevant documents); only the top N is kept"
        ),
    )
    drop_judged_zero: bool = Field(
        False,
        description="labels: blend: leave out explicit grade-0 judgements (Cranfield's are the source papers)",
    )
    pools: list[Path] = Field(
        default_factory=list,
        description="labels: blend: more first-stage runs (rank_llm JSON, relative to path) pooled as candidates",
    )

    @model_validator(mode="after")
    def _trec_files(self) -> SourceConfig:
        if self.format == "trec-dl" and (self.candidates is None or self.qrels is None):
            raise ValueError(f"source {self.name!r}: format trec-dl needs 'candidates' and 'qrels'")
        return self


class TeacherConfig(_Strict):
    """A teacher LLM labelling every pair through an erank engine (spec 3.1)."""

    model: str
    engine: str = "transformers"
    mode: Literal["direct", "reasoning"] = "reasoning"
    runs: int = Field(3, ge=1, description="independent runs per pair; the one closest to the mean is kept")
    max_output_tokens: int = Field(2048, ge=1, description="outputs longer than this are dropped")
    temperature: float = Field(
        1.0,
        gt=0,
        description="runs sample at this temperature (direct: the score; reasoning: the generation)",
    )
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)


class DataConfig(_Strict):
    """``erank train data``: per query 1 positive + N-1 negatives, labelled, written as a dataset."""

    sources: list[SourceConfig] = Field(min_length=1)
    output_dir: Path
    tokenizer: str | None = Field(None, description="model whose tokenizer/chat template builds prompts")
    docs_per_query: int = Field(20, ge=2)
    tiers: list[TierConfig] = Field(default_factory=_default_tiers, min_length=1)
    positive_min_grade: int = Field(1, ge=1)
    target_style: Literal["direct", "reasoning"] = "direct"
    labels: Literal["grades", "teacher", "blend"] = "grades"
    blend_teacher: str | None = Field(
        None,
        description="labels: blend: the sentence-transformers teacher (default: bundled all-MiniLM-L6-v2)",
    )
    max_docs_per_query: int | None = Field(
        None, ge=2, description="labels: blend: judged documents kept per query (a random sample)"
    )
    grade_map: dict[int, int] | None = Field(
        None, description="grade -> 0..10; default round(10 * grade / max_grade), unjudged 0"
    )
    teacher: TeacherConfig | None = None
    truncate_length: int = Field(2048, ge=1, description="query and document cut to this many tokens")
    cutoff: int = Field(2048, ge=16, description="pairs whose prompt + target exceed this are dropped")
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="queries held out as the eval split")
    eval_sources: list[str] = Field(default_factory=list, description="sources used only for evaluation")
    eval_candidates: int = Field(100, ge=1, description="first-stage depth kept for the eval split")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.labels == "teacher" and self.teacher is None:
            raise ValueError("labels: teacher needs a 'teacher' section (model, engine, runs...)")
        if self.grade_map is not None:
            bad = {g: s for g, s in self.grade_map.items() if not 0 <= s <= 10}
            if bad:
                raise ValueError(f"grade_map values must be scores 0..10, got {bad}")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        unknown = set(self.eval_sources) - set(names)
        if unknown:
            raise ValueError(f"eval_sources names {sorted(unknown)} that are not in sources {names}")
        return self


class LoraConfig(_Strict):
    """PEFT LoRA (spec 3.1 defaults: rank 32, alpha 64, all linear layers)."""

    r: int = Field(32, ge=1)
    alpha: int = Field(64, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"
    top_layers: int | None = Field(
        None,
        ge=1,
        description=(
            "LoRA on the top N decoder layers only (PEFT layers_to_transform); the layers below stay "
            "the base model's, so the pointwise trainer computes their output once per pair and "
            "caches it (training then costs the top N layers only)"
        ),
    )


class EvalConfig(_Strict):
    """A small validation nDCG@10: rerank the eval split's first-stage candidates."""

    max_queries: int = Field(8, ge=1)
    candidates: int = Field(10, ge=1)
    truncate_length: int = Field(2048, ge=1)


class SFTConfig(_Strict):
    """``erank train sft``: TRL's SFTTrainer + PEFT LoRA, loss on the target only.

    ``trainer: pointwise`` selects :mod:`erank.training.pointwise` instead (direct style, fast on
    CPU): one query's ``docs_per_step`` documents per step, integer-target cross-entropy plus a
    listwise term.
    """

    model: str
    trainer: Literal["trl", "pointwise"] = "trl"
    docs_per_step: int = Field(16, ge=2, description="pointwise: documents of one query per step")
    listwise_weight: float = Field(1.0, ge=0, description="pointwise: weight of the listwise KL term")
    listwise_temperature: float = Field(1.0, gt=0, description="pointwise: temperature of the listwise term")
    sampling: Literal["random", "cycle"] = Field("random", description="pointwise: query order")
    source_weights: dict[str, float] = Field(
        default_factory=dict,
        description="pointwise, sampling random: a query's weight by its source (default 1)",
    )
    schedule_steps: int | None = Field(
        None, ge=1, description="pointwise: length of the LR schedule (default: the run's steps)"
    )
    easy_negatives: int = Field(
        0, ge=0, description="pointwise: documents of other queries per step, target 0 (the easy tier)"
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    template: str | None = Field(
        None,
        description="pointwise: the prompt template (name or text; default ERank's), saved with the adapter",
    )
    data: Path
    output_dir: Path
    lora: LoraConfig | None = Field(default_factory=lambda: LoraConfig.model_validate({}))
    learning_rate: float = Field(1e-4, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)
    per_device_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    cutoff: int = Field(2048, ge=16)
    bf16: bool | None = Field(None, description="default: on when CUDA is available")
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(100, ge=1)
    save_total_limit: int | None = Field(2, ge=1)
    eval_steps: int | None = Field(
        None, ge=1, description="validation nDCG@10 every n steps (and at the end)"
    )
    eval: EvalConfig | None = None
    gradient_checkpointing: bool = Field(False, description="trade compute for memory (long cutoffs)")
    merge: bool = Field(True, description="also save a merged model folder (loadable by Reranker)")
    seed: int = 0
    report_to: list[str] = Field(default_factory=list)


class RewardConfig(_Strict):
    """The reward and its constants (spec 3.2; the paper's constants are unpublished).

    r_RR per rollout: ``unparsable_penalty`` for an unparsable output; for a positive document
    ``pos_base + pos_scale / phi``; for a negative ranked above a positive
    ``neg_above_penalty``; for a negative below every positive
    ``neg_max * (1 - ((s - s_ref) / max_score) ** 2)``.
    """

    kind: Literal["rr", "ndcg", "se"] = "rr"
    unparsable_penalty: float = -1.0
    pos_base: float = 0.5
    pos_scale: float = 0.5
    neg_above_penalty: float = -0.5
    neg_max: float = 0.5
    max_score: int = Field(10, ge=1)


class RLConfig(_Strict):
    """``erank train rl``: GRPO with the listwise-derived reward (spec 3.2).

    ``trainer: pointwise`` selects :mod:`erank.training.pointwise`: direct-style rollouts, one
    query's ``docs_per_query`` documents per step, ``mini_batches`` optimiser steps per rollout
    batch; ``model`` is then the SFT stage's LoRA adapter folder.
    """

    model: str = Field(description="the SFT model folder: policy start and KL reference")
    trainer: Literal["own", "pointwise"] = "own"
    base_model: str | None = Field(None, description="pointwise: the adapter's base (default: its config's)")
    docs_per_query: int = Field(16, ge=2, description="pointwise: N documents of one query per group")
    mini_batches: int = Field(
        2,
        ge=1,
        description="optimiser steps per rollout batch (so later ones see a moved policy and the clip acts)",
    )
    positive_target: float = Field(5.0, ge=0, description="pointwise: targets at or above are positives")
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    data: Path
    output_dir: Path
    rollouts: int = Field(5, ge=2, description="G rollouts per prompt")
    max_queries: int | None = Field(None, ge=1, description="use only the first n queries of the data")
    source_weights: dict[str, float] = Field(
        default_factory=dict,
        description="pointwise: sample each step's query with this weight by source (default: cycle in order)",
    )
    queries_per_batch: int = Field(1, ge=1, description="whole queries per optimisation step")
    learning_rate: float = Field(1e-6, gt=0)
    clip: float = Field(0.2, gt=0)
    kl_coef: float = Field(0.001, ge=0)
    epochs: int = Field(1, ge=1)
    inner_epochs: int = Field(1, ge=1, description="optimisation passes over one batch of rollouts")
    max_steps: int = Field(-1, ge=-1)
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(
        1024, ge=8, description="reasoning style: longest rollout (the paper: responses up to 1024 tokens)"
    )
    micro_batch: int = Field(
        8, ge=1, description="sequences per forward/backward pass (gradients accumulate over a step)"
    )
    lora: LoraConfig | None = Field(None, description="None: full-parameter training (the paper)")
    reward: RewardConfig = Field(default_factory=lambda: RewardConfig.model_validate({}))
    cutoff: int = Field(1024, ge=16)
    max_grad_norm: float = Field(1.0, gt=0)
    save_steps: int = Field(10, ge=1)
    logging_steps: int = Field(1, ge=1)
    eval_steps: int | None = Field(None, ge=1)
    eval: EvalConfig | None = None
    bf16: bool | None = None
    seed: int = 0


C = TypeVar("C", bound=BaseModel)


def load_config(path: str | Path, cls: type[C]) -> C:
    """Read and validate a YAML config; every problem becomes one :class:`InputError`.

    Relative paths inside the file stay relative to the current directory (run the command from
    the folder the config is written for, usually the repository root).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{p} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{p} must contain a mapping of settings (key: value), got {type(raw).__name__}")
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown setting; the {cls.__name__} settings are: {', '.join(cls.model_fields)}"
            lines.append(f"  {where}: {msg}")
        raise InputError(f"invalid config {p}:\n" + "\n".join(lines)) from exc
