"""Batches that keep every document of a query together (the listwise reward needs them all).

>>> s = QueryGroupSampler(["q1", "q1", "q2", "q3", "q3"], queries_per_batch=2, shuffle=False)
>>> list(s)
[[0, 1, 2], [3, 4]]
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from erank.errors import InputError

__all__ = ["QueryGroupSampler"]


class QueryGroupSampler:
    """Yields lists of example indices; each list holds whole queries (all of their documents).

    Args:
        query_ids: the query id of every example (documents of a query need not be adjacent).
        queries_per_batch: how many queries one batch holds (the last batch may hold fewer).
        shuffle: shuffle the order of queries each epoch (seeded by ``seed + epoch``).
        seed: the base seed.

    ``set_epoch(e)`` selects the permutation of epoch ``e``, so a resumed run continues with the
    same batches; ``skip`` batches can be dropped from the start with :meth:`batches`.
    """

    def __init__(
        self, query_ids: Sequence[str], queries_per_batch: int = 1, *, shuffle: bool = True, seed: int = 0
    ) -> None:
        if queries_per_batch < 1:
            raise InputError(f"queries_per_batch must be at least 1, got {queries_per_batch}")
        self.groups: dict[str, list[int]] = {}
        for i, q in enumerate(query_ids):
            self.groups.setdefault(str(q), []).append(i)
        self.queries_per_batch = queries_per_batch
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.groups) // self.queries_per_batch)

    def batches(self, skip: int = 0) -> Iterator[list[int]]:
        order = list(self.groups)
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
        for b, start in enumerate(range(0, len(order), self.queries_per_batch)):
            if b < skip:
                continue
            yield [i for q in order[start : start + self.queries_per_batch] for i in self.groups[q]]

    def __iter__(self) -> Iterator[list[int]]:
        return self.batches()
