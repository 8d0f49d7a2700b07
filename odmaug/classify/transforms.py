"""Batched train-time image transforms of the classifier (flips, rotation, colour) for fundus and
endoscopy images, on the training device (synthesis, ``odmaug augment``, is :mod:`odmaug.augment`).

Images live in memory as one uint8 tensor; each batch is augmented in a handful of tensor ops
(one ``grid_sample`` for flips and rotation together, three blends for colour), with every random
draw taken from an explicit CPU ``torch.Generator``: the same seed gives the same batches on any
device, and no per-image Python loop or worker process sits in the hot path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from odmaug.data.pixels import peak

# Luma weights (ITU-R BT.601), as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentSettings:
    """What :func:`augment_batch` may change.

    Attributes:
        hflip: random horizontal flips (p = 0.5).
        vflip: random vertical flips (p = 0.5).
        rotation_degrees: rotation angle drawn uniformly in [-r, r]; 0 disables it.
        color_jitter: s; brightness and contrast factors in [1 - s, 1 + s], saturation too.
    """

    hflip: bool = True
    vflip: bool = True
    rotation_degrees: float = 0.0
    color_jitter: float = 0.0

    @property
    def geometric(self) -> bool:
        return self.hflip or self.vflip or self.rotation_degrees > 0


def _uniform(n: int, low: float, high: float, rng: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=rng) * (high - low) + low


def geometric_transform(x: torch.Tensor, settings: AugmentSettings, rng: torch.Generator) -> torch.Tensor:
    """Random flips and rotation about the centre, as one affine resampling.

    Args:
        x: float [B, C, H, W] in [0, 1].
    Returns:
        float [B, C, H, W]; pixels rotated in from outside the image are black (fundus background).
    """
    b = x.shape[0]
    # All draws happen on the CPU generator in a fixed order, whatever the settings' device.
    flip_x = torch.where(torch.rand(b, generator=rng) < 0.5, -1.0, 1.0) if settings.hflip else torch.ones(b)
    flip_y = torch.where(torch.rand(b, generator=rng) < 0.5, -1.0, 1.0) if settings.vflip else torch.ones(b)
    angle = _uniform(b, -settings.rotation_degrees, settings.rotation_degrees, rng) * (math.pi / 180.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output coords to input coords: rotation R(angle) then flip diag(fx, fy); [B, 2, 3].
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip_x, -sin * flip_x
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip_y, cos * flip_y
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # [B, H, W, 2]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def color_transform(x: torch.Tensor, strength: float, rng: torch.Generator) -> torch.Tensor:
    """Mild random brightness, contrast and saturation per image (torchvision's definitions).

    Args:
        x: float [B, C, H, W] in [0, 1]; with C = 1 saturation changes nothing (gray is its own luma).
        strength: s; each factor is drawn in [1 - s, 1 + s].
    """
    b = x.shape[0]
    factors = _uniform(3 * b, 1.0 - strength, 1.0 + strength, rng).view(3, b, 1, 1, 1).to(x.device, x.dtype)
    luma = torch.tensor(_LUMA if x.shape[1] == 3 else (1.0,), device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    x = (x * factors[0]).clamp(0.0, 1.0)  # brightness
    mean_gray = (x * luma).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)  # [B, 1, 1, 1]
    x = (factors[1] * x + (1 - factors[1]) * mean_gray).clamp(0.0, 1.0)  # contrast
    gray = (x * luma).sum(1, keepdim=True)  # [B, 1, H, W]
    return (factors[2] * x + (1 - factors[2]) * gray).clamp(0.0, 1.0)  # saturation


def augment_batch(images_uint8: torch.Tensor, settings: AugmentSettings, rng: torch.Generator) -> torch.Tensor:
    """uint8 or uint16 [B, C, H, W] -> augmented float [B, C, H, W] in [0, 1] (same device)."""
    x = images_uint8.float().div_(peak(images_uint8.dtype))
    if settings.geometric:
        x = geometric_transform(x, settings, rng)
    if settings.color_jitter > 0:
        x = color_transform(x, settings.color_jitter, rng)
    return x
