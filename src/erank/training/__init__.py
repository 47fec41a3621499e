"""Training ERank: data construction, SFT (TRL + PEFT LoRA) and GRPO with the listwise reward.

``erank train data|sft|rl CONFIG.yaml`` runs each stage; see ``docs/training.md``. The modules
import TRL, PEFT and datasets lazily (the ``training`` extra).
"""

from __future__ import annotations

__all__ = ["config", "data", "rewards", "sampler", "sft", "rl", "evaluate"]
