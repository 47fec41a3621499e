"""Large offline reranking jobs on Ray Data: ``erank batch`` (see ``docs/batch.md``).

Ray is an optional extra (``pip install 'erank[ray]'``), imported only when a job runs.

>>> from erank.batch import BatchConfig, run_batch                          # doctest: +SKIP
>>> run_batch(BatchConfig(inputs=["pairs.jsonl"], output="out/", workers=2)).pairs  # doctest: +SKIP
300
"""

from __future__ import annotations

from erank.batch.pipeline import BatchConfig, BatchProgress, BatchSummary, plan_inputs, run_batch

__all__ = ["BatchConfig", "BatchProgress", "BatchSummary", "plan_inputs", "run_batch"]
