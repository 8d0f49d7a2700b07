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
    rng = _image_rng(seed, index)
    severity = grade / max(num_classes - 1, 1)  # 0..1
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx = size / 2 + rng.normal(0, size * 0.02)
    cy = size / 2 + rng.normal(0, size * 0.02)
    radius = size * rng.uniform(0.42, 0.47)
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / radius
    disc = r <= 1.0

    # Retina: orange-red, darker towards the rim (vignetting), with per-image tint.
    base = np.array([0.78, 0.36, 0.16]) + rng.normal(0, 0.03, 3)
    shade = np.clip(1.0 - 0.45 * r**2, 0.0, 1.0)[..., None]
    img = base[None, None, :] * shade
    img = img + rng.normal(0, 0.012, img.shape)  # fine texture

    # Optic disc: a bright yellowish spot left or right of centre.
    side = 1.0 if rng.random() < 0.5 else -1.0
    ox, oy = cx + side * radius * 0.55, cy + rng.normal(0, radius * 0.05)
    od = np.exp(-(((xx - ox) ** 2 + (yy - oy) ** 2) / (2 * (radius * 0.11) ** 2)))[..., None]
    img = img * (1 - od) + np.array([0.98, 0.85, 0.55]) * od

    # Vessels: a few dark arcs leaving the optic disc.
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

    # Lesions: count, size and darkness grow with severity.
    n_haem = rng.poisson(1 + 14 * severity) if grade > 0 else 0
    n_exud = rng.poisson(10 * severity**1.5) if grade > 0 else 0
    lesion_scale = radius * (0.03 + 0.05 * severity)
    for kind, count in (("haem", n_haem), ("exud", n_exud)):
        for _ in range(count):
            rho, phi = radius * 0.85 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            lx, ly = cx + rho * np.cos(phi), cy + rho * np.sin(phi)
            lr = lesion_scale * rng.uniform(0.6, 1.4)
            mask = ((xx - lx) ** 2 + (yy - ly) ** 2) < lr**2
            if kind == "haem":
                colour = np.array([0.35, 0.05, 0.03]) * (1.0 - 0.4 * severity)
            else:
                colour = np.array([0.98, 0.92, 0.45])
            img[mask] = colour

    img[~disc] = 0.0
    return (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)


def synthetic_labels(counts: list[int]) -> np.ndarray:
    """Grades of the synthetic dataset, ``counts[g]`` images of grade g, in index order."""
    return np.concatenate([np.full(c, g, dtype=np.int64) for g, c in enumerate(counts)])
