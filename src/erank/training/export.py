"""Ship a trained LoRA adapter as the embedded default: fp16 weights, a small config, a checksum.

>>> from erank.training.export import export_adapter                    # doctest: +SKIP
>>> export_adapter("runs/smol/rl/adapter", "src/erank/weights/erank-smol")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from erank.errors import InputError

__all__ = ["export_adapter"]

logger = logging.getLogger(__name__)

_KEEP = ("r", "lora_alpha", "target_modules", "peft_type", "task_type", "lora_dropout", "bias")


def export_adapter(
    src: str | Path, dest: str | Path, *, base: str = "smollm2-135m", rule: str | None = None
) -> dict[str, Any]:
    """Write ``adapter_model.safetensors`` (float16), ``adapter_config.json``, ``erank.json`` and
    ``SHA256SUMS``.

    ``base`` is recorded in the config as the base model's erank name (not a machine's path);
    ``rule`` (``label_prob`` or ``expected``) overrides the ranking rule in ``erank.json``.
    Returns the file sizes and the checksum.
    """
    import torch
    from safetensors.torch import load_file, save_file

    s = Path(src)
    if not (s / "adapter_config.json").is_file() or not (s / "adapter_model.safetensors").is_file():
        raise InputError(
            f"{s} is not a LoRA adapter folder (adapter_config.json + adapter_model.safetensors)"
        )
    d = Path(dest)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.to(torch.float16).contiguous()
        for k, v in load_file(str(s / "adapter_model.safetensors")).items()
    }
    save_file(tensors, str(d / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((s / "adapter_config.json").read_text(encoding="utf-8"))
    small = {k: cfg[k] for k in _KEEP if k in cfg}
    small["base_model_name_or_path"] = base
    if isinstance(small.get("target_modules"), list):
        small["target_modules"] = sorted(small["target_modules"])
    (d / "adapter_config.json").write_text(
        json.dumps(small, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    names = ["adapter_config.json", "adapter_model.safetensors"]
    settings = (
        json.loads((s / "erank.json").read_text(encoding="utf-8")) if (s / "erank.json").is_file() else {}
    )
    if rule is not None:
        if rule not in ("label_prob", "expected"):
            raise InputError(f"rule must be 'label_prob' or 'expected', got {rule!r}")
        settings["rule"] = rule
    if settings:
        (d / "erank.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        names.insert(0, "erank.json")
    lines = []
    for name in names:
        digest = hashlib.sha256((d / name).read_bytes()).hexdigest()
        lines.append(f"{digest}  {name}")
    (d / "SHA256SUMS").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = {
        "dest": str(d),
        "bytes": (d / "adapter_model.safetensors").stat().st_size,
        "sha256": lines[-1].split()[0],
    }
    logger.info("exported %s to %s (%d bytes)", s, d, out["bytes"])
    return out
