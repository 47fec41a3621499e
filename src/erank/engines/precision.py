"""Precision of the transformers engine: which dtype, bfloat16 weights on CPU, and a bf16 emulator.

* :func:`cpu_has_bf16` reads the CPU flags: bfloat16 matrix units (avx512_bf16 or AMX).
* :func:`resolve_dtype` turns ``dtype="auto"|"float32"|"bfloat16"|...`` into a ``torch.dtype``:
  ``auto`` is bfloat16 on CUDA and on CPUs with bf16 units, float32 on any other CPU (where torch's
  bf16 matrix product has no hardware path and runs tens of times slower than fp32).
* :func:`to_cpu_bf16` puts the matrix products of a model's layers on the bf16 units
  (:class:`BF16Linear`: bf16 weights, fp32 in and out); the residual stream, norms, attention,
  the output head and the log-softmax over the vocabulary stay float32.
* :class:`EmulatedBF16` computes bf16 matrix products with fp32 kernels and the rounding of a bf16
  kernel: the fidelity of the bf16 path can be measured (``benchmarks/bf16_fidelity.py``, the
  tests) on a CPU without bf16 units. The engine never uses it.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from erank.errors import InputError

__all__ = [
    "DTYPE_NAMES",
    "BF16Linear",
    "EmulatedBF16",
    "cpu_has_bf16",
    "resolve_dtype",
    "to_cpu_bf16",
]

#: The names ``dtype`` accepts besides a ``torch.dtype``; ``"auto"`` chooses by device and CPU.
DTYPE_NAMES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 matrix units (avx512_bf16 or AMX), so bf16 matmuls pay."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """The compute dtype of the transformers engine on ``device``.

    An explicit dtype wins. ``None`` or ``"auto"`` read ``$ERANK_DTYPE`` (same names; the older
    ``ERANK_CPU_BF16=0|1`` still works on CPU), then choose: bfloat16 on CUDA (and any non-CPU
    device), bfloat16 on a CPU with bf16 units (:func:`cpu_has_bf16`), float32 on any other CPU.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    name = (dtype or "auto").strip().lower()
    if name == "auto":
        name = os.environ.get("ERANK_DTYPE", "").strip().lower() or "auto"
    if name not in DTYPE_NAMES:
        raise InputError(f"dtype must be one of {', '.join(DTYPE_NAMES)} or a torch.dtype, got {dtype!r}")
    chosen = DTYPE_NAMES[name]
    if chosen is not None:
        return chosen
    if device.type != "cpu":
        return torch.bfloat16
    legacy = os.environ.get("ERANK_CPU_BF16", "")
    if legacy in ("0", "1"):
        return torch.bfloat16 if legacy == "1" else torch.float32
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


class BF16Linear(torch.nn.Module):
    """A linear layer whose weight is stored in bfloat16 and whose input and output are float32.

    The product runs on the CPU's bf16 units (bf16 inputs, fp32 accumulation, a bf16 result
    widened back); the bias, if any, is added in fp32. Everything between the linear layers (the
    residual stream, RMSNorm, rotary embeddings, attention and its softmax) stays float32.
    """

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = torch.nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        bias = linear.bias
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(torch.bfloat16), self.weight).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight=bfloat16"


def to_cpu_bf16(model: Any) -> Any:
    """Put the matrix products of ``model``'s layers on the bf16 units, in place; return ``model``.

    Every ``nn.Linear`` except the output head becomes a :class:`BF16Linear` (its weight rounded
    to bf16 once). The embeddings, the output head (it reads one or two positions per row, so its
    cost is nil), the residual stream, norms and attention stay float32, and so does the
    log-softmax over the vocabulary. Call it after any LoRA merge, so that the merge adds in fp32
    and the merged weight is rounded once.

    On 200 real DL20 pairs, against a model stored entirely in bf16 (bf16 residual stream and
    attention), this cuts the largest log P(s*) error from 0.16 to 0.06 and the largest expected
    score error from 0.32 to 0.18, and keeps every top-10 set (docs/benchmarks.md, issue 15).
    """
    head = model.get_output_embeddings()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and child is not head:
                setattr(parent, name, BF16Linear(child))
    return model


_MATMULS = {
    F.linear,
    torch.matmul,
    torch.mm,
    torch.bmm,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.Tensor.mm,
    torch.Tensor.bmm,
}


def _is_bf16(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype == torch.bfloat16


def _f32(x: Any) -> Any:
    return x.float() if _is_bf16(x) else x


class EmulatedBF16(TorchFunctionMode):
    """Inside ``with EmulatedBF16():`` bf16 matrix products run on fp32 kernels, rounded as bf16.

    A bf16 GEMM (oneDNN/AMX on CPU, tensor cores on GPU) multiplies bf16 inputs exactly,
    accumulates in fp32 and rounds the result to bf16; here the bf16 inputs are widened (exactly),
    multiplied by the fp32 kernel and the result rounded to bf16, which is the same arithmetic up
    to the order of the fp32 sums. Attention (``scaled_dot_product_attention`` with bf16 inputs)
    follows torch's CPU flash kernel: scores, mask and softmax in fp32, the unnormalised
    probabilities rounded to bf16 before the product with V, the output rounded to bf16. Every
    other op (RMSNorm, SiLU, the residual adds) runs as it would, on bf16 tensors.

    Use it to measure the bf16 path's fidelity on a CPU without bf16 units, where torch's own bf16
    GEMM has no hardware path (1.2 GFLOP/s against 92 in fp32 on 2 AVX2 cores, measured). It says nothing
    about bf16 speed.
    """

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _MATMULS and any(_is_bf16(a) for a in (*args, *kwargs.values())):
            out = func(*[_f32(a) for a in args], **{k: _f32(v) for k, v in kwargs.items()})
            return out.to(torch.bfloat16)
        if func is F.scaled_dot_product_attention and _is_bf16(args[0] if args else kwargs.get("query")):
            return _sdpa_bf16(*args, **kwargs)
        return func(*args, **kwargs)


def _sdpa_bf16(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    if dropout_p:
        raise NotImplementedError("EmulatedBF16 runs inference only (dropout_p must be 0)")
    q, k, v = query.float(), key.float(), value.float()
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
    s = (q @ k.transpose(-2, -1)) * (scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    if is_causal:
        lq, lk = s.shape[-2], s.shape[-1]
        keep = torch.ones(lq, lk, dtype=torch.bool, device=s.device).tril(diagonal=lk - lq)
        s = s.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        s = (
            s.masked_fill(~attn_mask, float("-inf"))
            if attn_mask.dtype == torch.bool
            else s + attn_mask.float()
        )
    m = s.amax(dim=-1, keepdim=True)
    p = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    denom = p.sum(dim=-1, keepdim=True).clamp_min(1e-30)  # a fully masked row (padding) gives 0
    out = (p.to(torch.bfloat16).float() @ v) / denom
    return out.to(torch.bfloat16)
