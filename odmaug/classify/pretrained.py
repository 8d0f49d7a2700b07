"""Pretrained weights for a classifier: a local safetensors file loaded into a timm model.

Nothing is dropped without a word. A ViT's absolute position embedding saved at another input
size is resampled to the model's patch grid, as timm does for its own weights; only the classifier
head may stay random (when the number of grades differs); any other tensor that does not fit is an
error; one line says what was loaded, resampled and left random.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from rich.markup import escape
from torch import nn

from odmaug.errors import OdmaugError


def load_pretrained(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local safetensors file into ``model``; only the classifier head may stay random.

    An absolute position embedding (a ViT's ``pos_embed``, [1, prefix + H*W, D]) saved for
    another input size is resampled to the model's patch grid as timm resamples its own weights
    (:func:`timm.layers.resample_abs_pos_embed`, bicubic, as in
    ``timm.models.vision_transformer.checkpoint_filter_fn``). The head (timm's
    ``pretrained_cfg["classifier"]``, e.g. ``fc``, ``head``) keeps its random initialisation when
    its shape differs (another number of grades). One line on stderr says what was loaded,
    resampled and left random.

    Returns:
        Names of the model's tensors that kept their random initialisation (head tensors only).

    Raises:
        OdmaugError: missing/unreadable file; a file for another architecture (fewer than half of
            the model's tensors match by name and shape); any other tensor of the model missing
            from the file or of another shape (the message names the first few and the count).
    """
    weights = _read_weights(Path(path))
    own = model.state_dict()
    resampled = _resample_pos_embed(model, weights) | _adapt_first_conv(model, weights)
    usable = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    if len(usable) < max(1, len(own) // 2):
        raise OdmaugError(
            f"{path}: weights do not fit this architecture ({len(usable)} of {len(own)} tensors match by name and shape)"
        )
    # BatchNorm's counter is not a weight: torch itself fills it in when a file lacks it
    left = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
    head = _head_names(model)
    bad = [k for k in left if not any(k == h or k.startswith(h + ".") for h in head)]
    if bad:
        shown = "; ".join(_mismatch(k, own, weights) for k in bad[:3])
        raise OdmaugError(f"{path}: {len(bad)} tensor(s) of {type(model).__name__} cannot be loaded "
                          f"({shown}{'; ...' if len(bad) > 3 else ''}); only the head ({', '.join(head)}) may differ")
    model.load_state_dict(usable, strict=False)
    _say_loaded(Path(path), f"{len(usable)} of {len(own)}", resampled, left, len(set(weights) - set(own)))
    return left


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise OdmaugError(f"pretrained weights not found: {path} (classifier.pretrained must be a local .safetensors file)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise OdmaugError(f"{path}: not a readable safetensors file ({err})") from None


def _resample_pos_embed(model: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, str]:
    """Resample ``weights["pos_embed"]`` in place to the model's patch grid; {name: "old -> new grid"}."""
    from timm.layers import resample_abs_pos_embed

    saved, pos = weights.get("pos_embed"), getattr(model, "pos_embed", None)
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if saved is None or not isinstance(pos, torch.Tensor) or grid is None or saved.shape == pos.shape:
        return {}
    # class/register tokens carry no position: they pass through (none when no_embed_class)
    prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 1))
    side = math.isqrt(max(saved.shape[1] - prefix, 0)) if saved.ndim == 3 else 0
    if side == 0 or side * side != saved.shape[1] - prefix or saved.shape[-1] != pos.shape[-1]:
        return {}  # not a square grid of the same width: the shape check names it
    weights["pos_embed"] = resample_abs_pos_embed(saved, new_size=list(grid), old_size=[side, side],
                                                  num_prefix_tokens=prefix, verbose=False)
    return {"pos_embed": f"{side}x{side} -> {grid[0]}x{grid[1]} patches"}


def _adapt_first_conv(model: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, str]:
    """RGB weights of the first convolution (timm's ``pretrained_cfg["first_conv"]``) adapted in
    place to a model with other input channels (a 1-channel radiograph classifier), as timm adapts
    its own pretrained weights (:func:`timm.models.adapt_input_conv`: 1 channel sums the RGB
    filters); {name: "3 -> 1 input channels"}."""
    from timm.models import adapt_input_conv

    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv")
    names = [first] if isinstance(first, str) else list(first or [])
    own, out = model.state_dict(), {}
    for name in (f"{n}.weight" for n in names):
        saved, mine = weights.get(name), own.get(name)
        if saved is None or mine is None or saved.ndim != 4 or saved.shape[1] == mine.shape[1]:
            continue
        weights[name] = adapt_input_conv(int(mine.shape[1]), saved)
        out[name] = f"{saved.shape[1]} -> {mine.shape[1]} input channels"
    return out


def _head_names(model: nn.Module) -> tuple[str, ...]:
    """The classifier module name(s) timm records for the model (``fc``, ``head``, ...)."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    head = cfg.get("classifier") or ()
    return (head,) if isinstance(head, str) else tuple(head)


def _mismatch(name: str, own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> str:
    if name not in weights:
        return f"{name} missing from the file"
    return f"{name}: file {list(weights[name].shape)}, model {list(own[name].shape)}"


def _say_loaded(path: Path, loaded: str, resampled: dict[str, str], left: list[str], unused: int) -> None:
    from odmaug.console import err_console, is_main_process

    if not is_main_process():  # torchrun's other processes would repeat it
        return
    parts = [f"pretrained {path}: loaded {loaded} tensors"]
    parts += [f"resampled {name} ({how})" for name, how in resampled.items()]
    parts.append(f"left random: {', '.join(left)} (the classifier head)" if left else "nothing left random")
    if unused:
        parts.append(f"{unused} tensor(s) of the file not in the model ignored")
    err_console.print(escape("; ".join(parts)), highlight=False, soft_wrap=True)
