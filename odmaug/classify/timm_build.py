"""timm models as odmaug builds them: one constructor for every classifier (random or pretrained
weights, any input size and channel count) and the name check with close matches."""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from odmaug.errors import OdmaugError


def check_model_name(name: str) -> None:
    """Raise a one-line error naming close timm matches when ``name`` is not a timm model."""
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"
    raise OdmaugError(f"unknown timm model '{name}'{hint}")


def build_timm_model(name: str, num_classes: int, image_size: int, channels: int = 3, **extra: Any) -> nn.Module:
    """``timm.create_model`` for ``image_size`` and ``channels``; ``extra`` (e.g. ``pretrained=True``) is passed on."""
    import timm
    from timm.models import get_pretrained_cfg_value

    kwargs: dict[str, Any] = {"num_classes": num_classes, "pretrained": False, **extra}
    if channels != 3:  # left out for RGB: timm's default, so colour models are built exactly as before
        kwargs["in_chans"] = channels
    if get_pretrained_cfg_value(name, "fixed_input_size"):
        kwargs["img_size"] = image_size
    try:
        return timm.create_model(name, **kwargs)
    except (TypeError, ValueError, RuntimeError, ArithmeticError, AssertionError) as err:
        # fixed-size models check img_size in their constructors (patch grids, windows)
        raise OdmaugError(f"timm could not build '{name}' for {image_size}px inputs: {err}") from None
