"""The compute device of a command, resolved once where the command starts."""

from __future__ import annotations

import torch

from odmaug.errors import OdmaugError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device for ``name``; a ``torch.device`` is returned as it is (resolving twice is harmless).

    ``auto`` picks CUDA, then Apple MPS, then the CPU.

    Raises:
        OdmaugError: an unknown name, or a device this machine does not have.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OdmaugError("--device cuda was asked for, but no CUDA device is available (try --device auto)")
    if name == "mps" and not _mps_available():
        raise OdmaugError("--device mps was asked for, but MPS is not available (try --device auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise OdmaugError(f"unknown device '{name}' (use auto, cpu, cuda or mps)") from None


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
