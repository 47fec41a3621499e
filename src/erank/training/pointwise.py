"""Fast direct-style training on CPU: SFT on 0..10 targets, then GRPO with r_RR (spec 3.1, 3.2).

Selected with ``trainer: pointwise`` in an SFT or RL config. It trains exactly what direct mode
scores at inference: the ERank prompt, the empty think block and ``<answer>``, and the model's
distribution over the score strings "0".."10" at that position ("10" = "1" then "0", read from
the same pass by appending "1", as :class:`~erank.methods.erank.ERankMethod` does).

What makes it fast on a CPU:

* the logits are computed at two positions only (``logits_to_keep=2``), never over the
  49k-token vocabulary at every position;
* matmuls run in bfloat16 under autocast where the CPU has bf16 units (avx512_bf16 / AMX),
  norms and the loss in float32;
* one step is one query's documents (``docs_per_step``), left-padded, split into micro-batches by
  length.

**SFT loss** per query: cross-entropy of the two-point target (mass on the two integers nearest
the real target, so its expectation is the target) against the model's raw score probabilities,
plus ``listwise_weight`` x KL(softmax(targets / T) || softmax(expected scores / T)) over the
query's documents: the pointwise integer targets of the paper plus a listwise signal that ranks.

**GRPO** per step: one query's ``docs_per_query`` documents (at least one positive, or the query
is refused), ``rollouts`` scores sampled per document from the policy's distribution over the 11
scores plus "anything else" (unparsable), the listwise reward over all N x G samples, advantages
normalised over each document's G samples, then ``mini_batches`` optimisation steps over the
documents, so every mini-batch after the first sees a policy that has moved and the PPO clip acts.
The KL to the reference (the SFT model) is the exact KL over the 12 outcomes.

Both stages checkpoint (adapter, optimiser, scheduler, RNG, step) atomically every
``save_steps`` and resume after a kill.

The trainer's parts: :mod:`~erank.training.pointwise_model` (the model and its forward),
:mod:`~erank.training.pointwise_stage` (rows, checkpoints, the run of a stage),
:mod:`~erank.training.pointwise_sft` and :mod:`~erank.training.pointwise_rl` (the two loops).
"""

from __future__ import annotations

from erank.training.pointwise_model import PointwiseModel, score_logprobs_batch
from erank.training.pointwise_rl import grpo_loss, pick_group, run_pointwise_rl
from erank.training.pointwise_sft import run_pointwise_sft, sft_loss, two_point_target

__all__ = [
    "PointwiseModel",
    "score_logprobs_batch",
    "two_point_target",
    "sft_loss",
    "grpo_loss",
    "pick_group",
    "run_pointwise_sft",
    "run_pointwise_rl",
]

#: the names the trainer's tests and benchmarks have used
_Model = PointwiseModel
_pick_group = pick_group
