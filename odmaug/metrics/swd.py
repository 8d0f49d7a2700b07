"""Sliced Wasserstein distance between image sets on Laplacian-pyramid patches: a distance that
needs no network.

Karras et al. 2018, "Progressive Growing of GANs for Improved Quality, Stability, and Variation",
section 5 and its ``metrics/sliced_wasserstein.py``:

1. Every image becomes a Laplacian pyramid (the 5-tap binomial blur [1, 4, 6, 4, 1] / 16 in each
   direction, mirrored borders, then every second pixel: ``cv2.pyrDown``), one level per resolution
   from the image's down to 16 px; the coarsest level is the blurred image itself, the others are
   the detail each level adds (level - upsampled next level).
2. Per level, ``per_image`` (128) 7 x 7 patches at random positions (fully inside) per image; each
   patch is a descriptor of C * 49 values.
3. Descriptors are normalised per colour channel. ProGAN divides each set by its OWN mean and std;
   here both sets are normalised by the REFERENCE (real) set's, so that a global colour or
   contrast shift of the generated set counts as a difference instead of being normalised away.
4. Per level, the descriptors of both sets are projected on ``directions`` (512 = ProGAN's 4 x 128)
   random unit vectors; the Wasserstein-1 distance of the two 1-D distributions per direction,
   averaged over directions, is the level's SWD; the levels are averaged too. ProGAN prints the
   values x 1e3 (``SWDx1e3``).

Unlike ProGAN the two sets may differ in size (a grade's real images against 64 generated ones):
:func:`wasserstein_1d` is the exact distance of the two empirical distributions, the integral of
|F_a - F_b| (``scipy.stats.wasserstein_distance``); for equal sizes that is ProGAN's mean of
|sorted a - sorted b|. Everything random (patch positions, directions) comes from seeded
``torch.Generator`` s: the same inputs and seed give the same figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from odmaug.errors import OdmaugError

BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)
"""The 5-tap blur of ``cv2.pyrDown`` and ProGAN's ``gaussian_filter`` (its outer product / 256)."""
PATCH = 7
PER_IMAGE = 128
DIRECTIONS = 512
MIN_RESOLUTION = 16
DIRECTION_CHUNK = 64  # directions projected at a time: bounds memory at ~[N, 64] per set


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """``x`` [B, C, H, W] convolved with the separable 5 x 5 binomial kernel times ``gain``, mirrored
    borders (scipy.ndimage ``mode='mirror'`` = torch ``reflect``: d c b | a b c d | c b a)."""
    k = torch.tensor(BINOMIAL_5, dtype=x.dtype, device=x.device) / 16.0
    c = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, (k * gain).view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """``cv2.pyrDown`` / ProGAN's ``pyr_down``: blur, keep even rows and columns. [B, C, H, W] ->
    [B, C, ceil(H / 2), ceil(W / 2)], float."""
    return _blur(x)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """``cv2.pyrUp`` / ProGAN's ``pyr_up``: zeros between pixels, then the blur times 4.
    [B, C, h, w] -> [B, C, 2h, 2w], cropped to ``size`` (H, W) when given (odd finer levels)."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    up = _blur(up, gain=4.0)
    return up if size is None else up[:, :, : size[0], : size[1]]


def pyramid_resolutions(size: int, min_resolution: int = MIN_RESOLUTION) -> list[int]:
    """ProGAN's levels for square images of ``size`` px: size, size / 2, ... while >= ``min_resolution``
    (32 px -> [32, 16]). Raises OdmaugError when ``size`` is below ``min_resolution``."""
    if size < min_resolution:
        raise OdmaugError(f"images of {size} px are smaller than the pyramid's smallest level ({min_resolution} px)")
    out = []
    while size >= min_resolution:
        out.append(size)
        size //= 2
    return out


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """ProGAN's ``generate_laplacian_pyramid``: ``levels`` float tensors, the first [B, C, H, W]
    (finest detail), each next one half the size; the last is the blurred, downsampled image
    itself. Exact inverse: ``level[i] + pyr_up(reconstruction[i + 1])``. A floating input keeps its
    dtype; integer (uint8) images become float32 on their 0..255 scale, as ProGAN uses them."""
    pyramid = [images if images.is_floating_point() else images.float()]
    for _ in range(1, levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1], tuple(pyramid[-2].shape[-2:]))
    return pyramid


def patch_descriptors(level: torch.Tensor, generator: torch.Generator, per_image: int = PER_IMAGE,
                      patch: int = PATCH) -> torch.Tensor:
    """``per_image`` random ``patch`` x ``patch`` patches (fully inside) of every image of ``level``
    [B, C, H, W]: float [B * per_image, C, patch, patch], image i's patches at rows
    ``i * per_image ..``; positions drawn from ``generator`` (ProGAN's ``get_descriptors_for_minibatch``)."""
    b, c, h, w = level.shape
    half = patch // 2
    if min(h, w) < patch:
        raise OdmaugError(f"a {patch} x {patch} patch does not fit a {h} x {w} pyramid level")
    n = b * per_image
    ys = torch.randint(half, h - half, (n, 1, 1, 1), generator=generator)
    xs = torch.randint(half, w - half, (n, 1, 1, 1), generator=generator)
    offsets = torch.arange(-half, half + 1)
    image = (torch.arange(n) // per_image).view(n, 1, 1, 1)
    chan = torch.arange(c).view(1, c, 1, 1)
    flat = ((image * c + chan) * h + ys + offsets.view(1, 1, patch, 1)) * w + xs + offsets.view(1, 1, 1, patch)
    return level.reshape(-1)[flat.to(level.device)]


def random_directions(dim: int, count: int, generator: torch.Generator, dtype=np.float32) -> np.ndarray:
    """``count`` unit vectors uniform on the sphere in R^``dim``: [dim, count] (ProGAN's ``dirs``)."""
    dirs = torch.randn(dim, count, generator=generator, dtype=torch.float64)
    return (dirs / dirs.norm(dim=0, keepdim=True)).numpy().astype(dtype)


def quantile_steps(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the quantile functions of an n-point and an m-point empirical distribution are both
    constant: the widths [L] of the pieces of (0, 1] (L <= n + m, summing to 1) and, per piece, the
    index into the sorted n points and into the sorted m points that are its quantiles.

    The breakpoints i / n and j / m are kept as integers over lcm(n, m), so pieces are exact."""
    lcm = math.lcm(n, m)
    cuts = np.union1d(np.arange(1, n + 1, dtype=np.int64) * (lcm // n), np.arange(1, m + 1, dtype=np.int64) * (lcm // m))
    lows = np.concatenate([np.zeros(1, np.int64), cuts[:-1]])
    twice_mid = lows + cuts  # no breakpoint lies inside a piece, so its midpoint's quantile is the piece's
    return (cuts - lows) / lcm, twice_mid * n // (2 * lcm), twice_mid * m // (2 * lcm)


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Wasserstein-1 distance per ROW between the empirical distributions of ``a`` [D, n] and
    ``b`` [D, m] (equal weights): [D], in ``a``'s units and dtype.

    W1 = integral over u in (0, 1] of |Q_a(u) - Q_b(u)| for the quantile functions Q (sorted
    values), the same number as scipy.stats.wasserstein_distance (the integral of |F_a - F_b|
    over x); for n = m it is ProGAN's mean |sort(a) - sort(b)|. Sorting is numpy's (several times
    faster than torch's on CPUs with AVX-512). Raises OdmaugError for an empty set or differing D.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0] or not a.shape[1] or not b.shape[1]:
        raise OdmaugError(f"need two non-empty [D, N] sets with the same D; got {list(a.shape)} and {list(b.shape)}")
    return sorted_wasserstein_1d(np.sort(a, axis=1), np.sort(b, axis=1))


def sorted_wasserstein_1d(a_sorted: np.ndarray, b_sorted: np.ndarray) -> np.ndarray:
    """:func:`wasserstein_1d` of rows that are already sorted ascending: [D, n], [D, m] -> [D]."""
    widths, ia, ib = quantile_steps(a_sorted.shape[1], b_sorted.shape[1])
    return np.abs(a_sorted[:, ia] - b_sorted[:, ib]) @ widths.astype(a_sorted.dtype)


def sorted_projections(a: np.ndarray, directions: np.ndarray) -> list[np.ndarray]:
    """Descriptors ``a`` [n, D] projected on ``directions`` [D, K], each row sorted: one [k, n] array
    per chunk of :data:`DIRECTION_CHUNK` directions (chunks bound the memory of a large set)."""
    out = []
    for start in range(0, directions.shape[1], DIRECTION_CHUNK):
        dirs_t = np.ascontiguousarray(directions[:, start : start + DIRECTION_CHUNK].T, dtype=a.dtype)  # [k, D]
        out.append(np.sort(dirs_t @ a.T, axis=1))
    return out


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, directions: np.ndarray,
                       a_sorted: list[np.ndarray] | None = None) -> float:
    """Mean over ``directions`` [D, K] of the Wasserstein-1 distance between the projections of
    descriptors ``a`` [n, D] and ``b`` [m, D]; ``a_sorted``: ``sorted_projections(a, directions)``
    when already computed (a reference compared with many sets)."""
    a_sorted = a_sorted if a_sorted is not None else sorted_projections(a, directions)
    b_sorted = sorted_projections(b, directions)
    return float(sum(sorted_wasserstein_1d(pa, pb).sum() for pa, pb in zip(a_sorted, b_sorted))) / directions.shape[1]


@dataclass
class SWDReference:
    """The reference (real) set's normalised descriptors per pyramid level, and how they were made.

    Attributes:
        resolutions: level sizes in px, finest first (e.g. [32, 16]).
        descriptors: per level, float32 numpy [N * per_image, C * patch^2], normalised by ``mean``/``std``.
        mean, std: per level, float [1, C, 1, 1]: the reference's per-channel descriptor statistics.
        per_image, patch, seed: as passed to :func:`swd_reference`.
    """

    resolutions: list[int]
    descriptors: list[torch.Tensor]
    mean: list[torch.Tensor]
    std: list[torch.Tensor]
    per_image: int
    patch: int
    seed: int
    _sorted: dict = field(default_factory=dict, repr=False)
    """(level, directions seed, count) -> sorted_projections of that level: the reference's half of
    the work, done once (float32 [K, N] per level: 0.28 GB for 138k descriptors and 512 directions)."""

    def sorted_level(self, level: int, seed: int, directions: np.ndarray) -> list[np.ndarray]:
        """The sorted projections of level ``level`` on ``directions`` (drawn from ``seed``), cached."""
        key = (level, seed, directions.shape[1])
        if key not in self._sorted:
            self._sorted[key] = sorted_projections(self.descriptors[level], directions)
        return self._sorted[key]


def _descriptors(images: torch.Tensor, resolutions: list[int], per_image: int, patch: int, seed: int):
    """Raw descriptors [N * per_image, C, patch, patch] per level (level l's positions: seed * 1009 + l)."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise OdmaugError(f"images must be square [N, C, H, W]; got {list(images.shape)}")
    if images.shape[-1] != resolutions[0]:
        raise OdmaugError(f"images of {images.shape[-1]} px, but the reference was made at {resolutions[0]} px")
    pyramid = laplacian_pyramid(images, len(resolutions))
    return [patch_descriptors(level, torch.Generator().manual_seed(seed * 1009 + i), per_image, patch)
            for i, level in enumerate(pyramid)]


def swd_reference(images: torch.Tensor, *, per_image: int = PER_IMAGE, patch: int = PATCH,
                  min_resolution: int = MIN_RESOLUTION, seed: int = 0) -> SWDReference:
    """The reference set for :func:`swd` from real ``images`` [N, C, S, S] (uint8 0..255 or float).

    Raises:
        OdmaugError: non-square or empty images, or images smaller than ``min_resolution`` / a patch.
    """
    if not len(images):
        raise OdmaugError("the SWD reference set is empty")
    resolutions = pyramid_resolutions(images.shape[-1], min_resolution)
    raw = _descriptors(images, resolutions, per_image, patch, seed)
    means = [d.mean(dim=(0, 2, 3), keepdim=True) for d in raw]
    stds = [d.std(dim=(0, 2, 3), keepdim=True, unbiased=False).clamp_min(1e-8) for d in raw]
    normed = [((d - m) / s).flatten(1).numpy() for d, m, s in zip(raw, means, stds)]
    return SWDReference(resolutions, normed, means, stds, per_image, patch, seed)


def swd(reference: SWDReference, images: torch.Tensor, *, directions: int = DIRECTIONS, seed: int = 0) -> dict:
    """Sliced Wasserstein distance of ``images`` [M, C, S, S] to ``reference`` per pyramid level.

    Args:
        reference: from :func:`swd_reference` (same image size and channel count).
        images: the compared set, uint8 0..255 or float on the same scale as the reference's.
        directions: random projections per level (ProGAN: 4 repeats x 128 = 512).
        seed: seeds this set's patch positions (``seed * 1009 + level``; ProGAN draws them anew for
            every set) and the directions (``seed``, shared by every level's pair of sets).

    Returns:
        ``{"levels": {resolution: SWD}, "mean": mean over levels}``, in units of the reference's
        per-channel descriptor std (ProGAN reports these x 1e3).

    Raises:
        OdmaugError: an empty set, or images that do not match the reference's size.
    """
    if not len(images):
        raise OdmaugError("the set compared by SWD is empty")
    raw = _descriptors(images, reference.resolutions, reference.per_image, reference.patch, seed)
    dirs = random_directions(reference.descriptors[0].shape[1], directions, torch.Generator().manual_seed(seed))
    levels = {}
    for i, (res, ref, d) in enumerate(zip(reference.resolutions, reference.descriptors, raw)):
        normed = ((d - reference.mean[i]) / reference.std[i]).flatten(1).numpy().astype(ref.dtype)
        levels[res] = sliced_wasserstein(ref, normed, dirs, reference.sorted_level(i, seed, dirs))
    return {"levels": levels, "mean": sum(levels.values()) / len(levels)}
