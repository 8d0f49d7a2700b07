"""A built-in synthetic ordinal dataset: fundus-like discs whose lesions grow with grade.

Every image is drawn from its own random generator seeded by (dataset seed, image index), so the
dataset is deterministic and any single image can be redrawn alone. Grade is visible and ordered
by construction: higher grades have more, larger and darker haemorrhages and more bright exudates,
so a simple statistic (the share of lesion pixels inside the disc) rises with grade.
"""

from __future__ import annotations

import numpy as np


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 0x0D3A]))


def draw_fundus(grade: int, num_classes: int, size: int, seed: int, index: int) -> np.ndarray:
    """Draw one fundus-like image of the given grade.

    Args:
        grade: severity grade in 0..num_classes-1.
        num_classes: number of grades (scales lesion load so the top grade is the most severe).
        size: output side length in pixels.
        seed: dataset seed.
        index: image index within the dataset (with ``seed``, fixes every random choice).

    Returns:
        uint8 array [size, size, 3].
    """
    # The helpers below draw from ``rng`` in a fixed order: reordering them changes every image.
    rng = _image_rng(seed, index)
    severity = grade / max(num_classes - 1, 1)  # 0..1
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx = size / 2 + rng.normal(0, size * 0.02)
    cy = size / 2 + rng.normal(0, size * 0.02)
    radius = size * rng.uniform(0.42, 0.47)
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / radius
    img = _retina(rng, r)
    img, ox, oy, side = _optic_disc(rng, img, xx, yy, cx, cy, radius)
    _vessels(rng, img, xx, yy, (ox, oy), radius, side)
    if grade > 0:
        _lesions(rng, img, xx, yy, (cx, cy), radius, severity)
    img[r > 1.0] = 0.0  # outside the disc
    return (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)


def _retina(rng: np.random.Generator, r: np.ndarray) -> np.ndarray:
    """Orange-red, darker towards the rim (vignetting), with a per-image tint: float [H, W, 3]."""
    base = np.array([0.78, 0.36, 0.16]) + rng.normal(0, 0.03, 3)
    shade = np.clip(1.0 - 0.45 * r**2, 0.0, 1.0)[..., None]
    img = base[None, None, :] * shade
    return img + rng.normal(0, 0.012, img.shape)  # fine texture


def _optic_disc(rng, img, xx, yy, cx, cy, radius):
    """A bright yellowish spot left or right of centre; returns (image, its x, its y, side ±1)."""
    side = 1.0 if rng.random() < 0.5 else -1.0
    ox, oy = cx + side * radius * 0.55, cy + rng.normal(0, radius * 0.05)
    od = np.exp(-(((xx - ox) ** 2 + (yy - oy) ** 2) / (2 * (radius * 0.11) ** 2)))[..., None]
    return img * (1 - od) + np.array([0.98, 0.85, 0.55]) * od, ox, oy, side


def _vessels(rng, img, xx, yy, origin, radius, side) -> None:
    """A few dark arcs leaving the optic disc at ``origin``, drawn into ``img``."""
    ox, oy = origin
    for _ in range(4):
        angle = rng.uniform(0, 2 * np.pi)
        curvature = rng.uniform(-1.5, 1.5)
        t = np.linspace(0, 1.6 * radius, 64)
        px = ox + np.cos(angle + curvature * t / radius) * t * -side
        py = oy + np.sin(angle + curvature * t / radius) * t
        width = radius * 0.025
        for x, y in zip(px[::2], py[::2]):
            mask = ((xx - x) ** 2 + (yy - y) ** 2) < width**2
            img[mask] = img[mask] * 0.72


def _lesions(rng, img, xx, yy, centre, radius, severity) -> None:
    """Haemorrhages and exudates whose count, size and darkness grow with severity, drawn into ``img``."""
    cx, cy = centre
    counts = {"haem": rng.poisson(1 + 14 * severity), "exud": rng.poisson(10 * severity**1.5)}
    colours = {"haem": np.array([0.35, 0.05, 0.03]) * (1.0 - 0.4 * severity), "exud": np.array([0.98, 0.92, 0.45])}
    lesion_scale = radius * (0.03 + 0.05 * severity)
    for kind, count in counts.items():
        for _ in range(count):
            rho, phi = radius * 0.85 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            lx, ly = cx + rho * np.cos(phi), cy + rho * np.sin(phi)
            lr = lesion_scale * rng.uniform(0.6, 1.4)
            mask = ((xx - lx) ** 2 + (yy - ly) ** 2) < lr**2
            img[mask] = colours[kind]


def synthetic_labels(counts: list[int]) -> np.ndarray:
    """Grades of the synthetic dataset, ``counts[g]`` images of grade g, in index order."""
    return np.concatenate([np.full(c, g, dtype=np.int64) for g, c in enumerate(counts)])
