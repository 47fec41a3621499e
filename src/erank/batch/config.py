"""A batch job's settings, its progress reports and its summary (:mod:`erank.batch.pipeline`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchConfig", "BatchProgress", "BatchSummary"]

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
MANIFEST = "manifest.json"
#: Settings that change the scores (:meth:`BatchConfig.scoring_settings`): a rerun must use the
#: same ones (the shard count, also kept in the manifest, is checked on its own).
_SCORING_KEYS = ("model", "engine", "method", "mode", "instruction", "truncate_length", "method_kwargs")
_RAW_LIMIT = 1000
#: CPUs Ray accounts to the light read/parse tasks, so they still fit beside whole-CPU scorer actors.
_LIGHT_CPUS = 0.25
_WAIT_FOR_WORKERS_S = 900


@dataclass
class BatchConfig:
    """Everything a batch job needs. Only ``inputs`` and ``output`` are required."""

    inputs: Sequence[str | os.PathLike[str]]
    output: str | os.PathLike[str]
    model: str | None = None
    engine: str = "transformers"
    method: str = "erank"
    mode: str | None = None
    instruction: str | None = None
    truncate_length: int | None = 2048
    batch_tokens: int | None = None
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    num_shards: int | None = None
    ray_address: str | None = None
    run_tag: str = "erank"
    show_progress_bars: bool = False

    def scoring_settings(self) -> dict[str, Any]:
        """The settings that decide the scores (the manifest keeps them; a rerun must match)."""
        return {key: getattr(self, key) for key in _SCORING_KEYS}


@dataclass
class BatchProgress:
    """Reported after every finished shard."""

    shards_done: int
    shards_total: int
    pairs: int
    errors: int
    seconds: float
    shard: int
    node: str

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BatchSummary:
    """What a finished job produced (also written to ``summary.json``)."""

    output: str
    pairs: int
    queries: int
    errors: int
    shards: int
    shards_skipped: int
    shards_run: int
    pairs_this_run: int
    seconds: float
    nodes: list[str]
    run_file: str
    errors_file: str

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_this_run / self.seconds if self.seconds > 0 else 0.0
