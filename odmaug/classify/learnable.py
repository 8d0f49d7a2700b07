"""Can a classifier learn at this size? Models that run but cannot, refused before training.

:mod:`odmaug.probe` refuses networks that crash at the configured size. Two kinds run and still
cannot learn, and used to train to the end with exit code 0:

- a patch grid that leaves pixels unseen: ``vit_tiny_patch16_224`` at 24 px cuts one 16x16 patch
  and never looks at the other 56% of each image (changing those pixels changes its output by 0);
- a collapsed feature map: ``efficientnet_b0`` at 8 px is 1x1 from stride 8 on, so its last two
  downsampling stages convolve one value padded with zeros (it trained to loss 9.9, guessing is 1.6).

A single 1x1 stage at the very end is normal and allowed (``resnet18`` at 32 px, the quickstart;
``test_resnet`` at 16 px, the smoke recipe). Both facts come from one batch-1 forward pass with
hooks (the first convolution's windows; the map size of each stage ``feature_info`` names).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

COLLAPSED_STAGES = 2
"""Downsampling stages that may not see a 1x1 map: at two or more the network has collapsed."""


def _covered(size: int, kernel: int, stride: int, padding: int) -> int:
    """Input rows (of ``size``) that at least one window of a convolution reads."""
    outputs = (size + 2 * padding - kernel) // stride + 1
    rows: set[int] = set()
    for i in range(max(outputs, 0)):
        rows.update(range(max(0, i * stride - padding), min(size, i * stride - padding + kernel)))
    return len(rows)


def _as_pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _side(output: torch.Tensor, channels: int) -> Optional[int]:
    """The smaller spatial side of a stage's output (NCHW or NHWC), None when it is not a map."""
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        return None
    dims = output.shape[2:] if output.shape[1] == channels else output.shape[1:3]
    return int(min(dims))


def measure(model: nn.Module, size: int) -> tuple[float, str, list[tuple[int, int]]]:
    """One forward pass on zeros [1, C, size, size]: the share of input pixels the first convolution
    never reads, its window (``16x16 patch grid``), and (reduction, map side) per feature stage."""
    first: dict = {}
    stages: list[tuple[int, int]] = []
    hooks = []

    def on_conv(module: nn.Conv2d, inputs, _output) -> None:
        if not first and isinstance(inputs[0], torch.Tensor):
            first.update(module=module, shape=inputs[0].shape[-2:])

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(on_conv))
    for info in getattr(model, "feature_info", None) or []:
        if isinstance(info, dict) and info.get("module"):
            part = model.get_submodule(info["module"])
            hooks.append(part.register_forward_hook(
                lambda _m, _i, out, info=info: stages.append((info["reduction"], _side(out, info["num_chs"])))))
    # the input's channels from the first convolution (RGB or grayscale models alike)
    channels = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model(torch.zeros(1, channels, size, size))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    if not first or isinstance(first["module"].padding, str):
        return 0.0, "", [s for s in stages if s[1] is not None]
    conv, (height, width) = first["module"], first["shape"]
    (kh, kw), (sh, sw), (ph, pw) = (_as_pair(v) for v in (conv.kernel_size, conv.stride, conv.padding))
    seen = _covered(height, kh, sh, ph) * _covered(width, kw, sw, pw)
    return 1.0 - seen / (height * width), f"{kh}x{kw} windows at stride {sh}", [s for s in stages if s[1] is not None]


def problem(model: nn.Module, size: int) -> Optional[str]:
    """Why ``model`` cannot learn from ``size`` px images (None: it can)."""
    unseen, window, stages = measure(model, size)
    if unseen > 0.005:  # half a percent: an odd border row of a large image is not worth a refusal
        return f"its first layer's {window} never read {unseen:.0%} of each image"
    collapsed = [r0 for (r0, s0), (r, _) in zip(stages, stages[1:]) if r > r0 and s0 == 1]
    if len(collapsed) >= COLLAPSED_STAGES:
        return (f"its feature map is 1x1 from stride {collapsed[0]} on, so its last "
                f"{len(collapsed)} downsampling stages see one value padded with zeros")
    return None


def require_learnable(what: str, model: nn.Module, size: int, setting: str,
                      model_at: Callable[[int], Optional[nn.Module]]) -> None:
    """Raise unless ``model`` can learn from ``size`` px images, naming the smallest size that works.

    Args:
        model_at: ``S -> the network built for S`` (None when it cannot be built or run there).
    """
    from odmaug.errors import OdmaugError
    from odmaug.probe import smallest_working

    why = problem(model, size)
    if why is None:
        return

    def works(other: int) -> bool:
        candidate = model_at(other)
        return candidate is not None and problem(candidate, other) is None

    found, tried = smallest_working(works, size)
    hint = (f"the smallest size above {size} px where it can is {found} px (set {setting})" if found is not None
            else f"no multiple of 8 px up to {tried} px works; choose another network")
    raise OdmaugError(f"{what} runs at {size}x{size} px but cannot learn there: {why}; {hint}")
