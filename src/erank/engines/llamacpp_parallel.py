"""Several sequences per ``llama_decode`` for the llama.cpp engine (``n_seq`` > 1; see
:mod:`erank.engines.llamacpp`, whose module doc says what it does and what it measured)."""

from __future__ import annotations

from typing import Any

import numpy as np

from erank.engines.base import prefix_groups
from erank.engines.llamacpp import _log_softmax
from erank.errors import ModelLoadError

__all__ = ["ParallelDecoder"]


class ParallelDecoder:
    """A second llama.cpp context over the same weights for several sequences per decode (module doc).

    Sequence 0 holds a group's shared prefix; sequences ``1..n_seq`` are the requests of one
    decode, each starting from the prefix's cells. ``logprobs`` returns, per request, the
    log-softmax rows after its prompt and after each of its extension tokens.
    """

    def __init__(self, lib: Any, llm: Any, n_ctx: int, n_batch: int, n_seq: int, threads: int) -> None:
        params = lib.llama_context_default_params()
        # One KV stream of n_ctx cells per sequence: a unified cache (the prefix's cells shared,
        # not copied) measured 0.70x the one-at-a-time path, because every token then attends
        # over every sequence's cells (masked); separate streams measured 1.05x.
        params.n_ctx = n_ctx * (n_seq + 1)
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_seq + 1
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False
        params.no_perf = True
        ctx = lib.llama_init_from_model(llm._model.model, params)
        if not ctx:
            raise ModelLoadError(f"llama.cpp could not create a context for {n_seq} parallel sequences")
        self.lib, self.ctx, self.n_ctx, self.n_batch, self.n_seq = lib, ctx, n_ctx, n_batch, n_seq
        self.mem = lib.llama_get_memory(ctx)
        self.batch = lib.llama_batch_init(n_batch, 0, 1)
        self.n_vocab = int(llm.n_vocab())
        self.min_prefix = 16
        self.calls = self.tokens = 0

    def close(self) -> None:
        if self.ctx is not None:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of ``(token, position, sequence, wants_logits)`` items."""
        b = self.batch
        for k, (tok, pos, seq, want) in enumerate(items):
            b.token[k], b.pos[k], b.n_seq_id[k], b.logits[k] = tok, pos, 1, want
            b.seq_id[k][0] = seq
        b.n_tokens = len(items)
        rc = self.lib.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with status {rc} on a batch of {len(items)} tokens")
        self.calls += 1
        self.tokens += len(items)

    def _row(self, index: int) -> np.ndarray:
        ptr = self.lib.llama_get_logits_ith(self.ctx, index)
        return _log_softmax(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)))

    def _groups(self, seqs: list[list[int]], tails: list[int]) -> list[tuple[int, list[int]]]:
        """``[(prefix_length, request indices)]``: consecutive requests in token order sharing at
        least ``min_prefix`` tokens (a lone request has prefix 0), the tails kept out."""
        return prefix_groups(seqs, tails, self.min_prefix)

    def logprobs(self, seqs: list[list[int]], tails: list[int]) -> list[list[np.ndarray]]:
        rows: list[list[np.ndarray]] = [[] for _ in seqs]
        for plen, group in self._groups(seqs, tails):
            self.lib.llama_memory_clear(self.mem, True)
            prefix = seqs[group[0]][:plen]
            for k in range(0, plen, self.n_batch):
                self._decode([(t, k + j, 0, False) for j, t in enumerate(prefix[k : k + self.n_batch])])
            pending: list[tuple[int, int, int, bool]] = []
            wanted: list[tuple[int, int]] = []  # (index in the pending batch, request)
            slot = 0

            def run() -> None:
                nonlocal pending, wanted
                if pending:
                    self._decode(pending)
                    for index, req in wanted:
                        rows[req].append(self._row(index))
                pending, wanted = [], []

            for i in group:
                suffix = seqs[i][plen:]
                if slot == self.n_seq:
                    run()
                    for s in range(1, slot + 1):  # the prefix's cells stay (sequence 0)
                        self.lib.llama_memory_seq_rm(self.mem, s, -1, -1)
                    slot = 0
                slot += 1
                if plen:
                    self.lib.llama_memory_seq_cp(self.mem, 0, slot, -1, -1)
                first = len(suffix) - tails[i]
                for j, tok in enumerate(suffix):
                    if len(pending) == self.n_batch:  # full: decode it, the request continues after
                        run()
                    if j >= first:
                        wanted.append((len(pending), i))
                    pending.append((tok, plen + j, slot, j >= first))
            run()
        return rows
