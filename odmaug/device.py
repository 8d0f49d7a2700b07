"""Device choice and seeding shared by every stage."""

from __future__ import annotations

import random

import numpy as np
import torch

from odmaug.errors import OdmaugError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an unavailable device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OdmaugError("--device cuda was asked for, but no CUDA device is available (try --device auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise OdmaugError("--device mps was asked for, but MPS is not available (try --device auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise OdmaugError(f"unknown device '{name}' (use auto, cpu, cuda or mps)") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global generators (explicit generators are still preferred)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
