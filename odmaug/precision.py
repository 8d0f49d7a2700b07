"""Numeric precision of every network (generator and classifier): the autocast dtype and its context.

``auto`` picks bf16 where the hardware computes it natively (CUDA GPUs with bf16 support; CPUs with
AMX or AVX-512 BF16 instructions), fp16 on older CUDA GPUs (trainers scale its gradients) and fp32
elsewhere: on a CPU without bf16 units oneDNN emulates bf16, which is slower than fp32. Weights,
optimizer state, EMA and losses stay fp32 in every mode (autocast computes convolutions and matmuls
in the low precision), so the fp32 path is exact and a checkpoint does not depend on the precision
it was trained with.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path
from typing import ContextManager

import torch

from odmaug.errors import OdmaugError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """CPU feature flags that make bf16 fast (``amx_bf16``, ``avx512_bf16``) found on this host."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return tuple(f for f in ("amx_bf16", "avx512_bf16") if f in flags)


def fast_bf16(device: torch.device) -> bool:
    """True when ``device`` computes bf16 natively (so bf16 autocast is a speed-up, not a slow-down)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(cpu_bf16_flags())
    return False


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for precision ``name`` on ``device``; None means plain fp32.

    Raises:
        OdmaugError: for an unknown name, or fp16 off CUDA (fp16 on CPUs is slow and unscaled).
    """
    if name not in PRECISIONS:
        raise OdmaugError(f"unknown precision '{name}' (use {', '.join(PRECISIONS)})")
    if name == "auto":
        if fast_bf16(device):
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else None
    if name == "fp32":
        return None
    if name == "fp16":
        if device.type != "cuda":
            raise OdmaugError("precision fp16 needs a CUDA device (use bf16 or fp32 on this device)")
        return torch.float16
    if device.type == "mps":
        raise OdmaugError("precision bf16 is not supported on MPS (use fp32)")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise OdmaugError("this GPU has no bf16 support (use precision fp16 or fp32)")
    return torch.bfloat16


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16``, ``fp16`` or ``fp32`` for a value returned by :func:`resolve_precision`."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
