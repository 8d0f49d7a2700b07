"""A built-in grayscale ordinal set: knee-radiograph-like images whose joint narrows with grade.

The grading follows the shape of Kellgren-Lawrence grading of knee osteoarthritis (Kellgren &
Lawrence, Ann. Rheum. Dis. 1957): with grade the joint space between the femur (top) and the
tibia (bottom) narrows, the bone margins grow denser (subchondral sclerosis, a brighter and
sharper edge) and bony spurs (osteophytes) grow at the joint's corners. A classifier can learn
it from anatomy alone: the gap's height falls from ~14 % to ~3 % of the image as grade rises.

Every image is drawn from its own random generator seeded by (dataset seed, image index), so the
set is deterministic and any single image can be redrawn alone (``data.synthetic.kind: radiograph``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

RADIOGRAPH = "radiograph"
"""The ``data.synthetic.kind`` of this set, and the first part of its ``synthetic://`` references."""


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 0x4B4E]))


def draw_radiograph(grade: int, num_classes: int, size: int, seed: int, index: int) -> np.ndarray:
    """Draw one knee-radiograph-like image of the given grade.

    Args:
        grade: severity grade in 0..num_classes-1 (0: wide joint space, soft margins).
        num_classes: number of grades (the top grade is the narrowest joint).
        size: output side length in pixels.
        seed: dataset seed.
        index: image index within the dataset (with ``seed``, fixes every random choice).

    Returns:
        uint8 grayscale array [size, size, 1].
    """
    # The draws below come from ``rng`` in a fixed order: reordering them changes every image.
    rng = _image_rng(seed, index)
    severity = grade / max(num_classes - 1, 1)  # 0..1
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # [S, S] in 0..1
    centre_x = 0.5 + rng.normal(0, 0.02)
    joint_y = 0.5 + rng.normal(0, 0.02)
    gap = (0.14 - 0.11 * severity) * rng.uniform(0.9, 1.1)  # joint space height, share of the image
    half_width = rng.uniform(0.30, 0.36)
    femur, tibia = _bones(xx, yy, centre_x, joint_y, gap, half_width)
    tissue = 0.22 + 0.06 * np.exp(-((xx - centre_x) / 0.45) ** 2)  # soft tissue, brighter mid-leg
    bone = femur | tibia
    image = np.where(bone, 0.62 + rng.normal(0, 0.02), tissue)
    image = image + _sclerosis(femur, tibia, severity, size)
    image = image + _osteophytes(rng, xx, yy, centre_x, joint_y, gap, half_width, severity)
    blur = size * (0.035 - 0.025 * severity)  # margins sharpen with grade
    image = ndimage.gaussian_filter(image, sigma=max(blur, 0.3))
    image = image + rng.normal(0, 0.015, image.shape)  # film grain
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)[:, :, None]


def _bones(xx, yy, centre_x, joint_y, gap, half_width) -> tuple[np.ndarray, np.ndarray]:
    """Masks [S, S] of the femur (two rounded condyles above the joint) and the tibia (a plateau below)."""
    across = (xx - centre_x) / half_width  # -1..1 across the joint
    # The condyles bulge down on either side of a central notch; the plateau dips slightly.
    condyles = 0.03 * np.cos(np.pi * across) ** 2 * (np.abs(across) > 0.15)
    femur_edge = joint_y - gap / 2 + condyles
    tibia_edge = joint_y + gap / 2 + 0.015 * across**2
    # Both shafts narrow away from the joint, as the metaphyses flare towards it.
    femur = (yy < femur_edge) & (np.abs(xx - centre_x) < half_width * (1.0 - 0.8 * np.clip(femur_edge - yy, 0, 0.4)))
    tibia = (yy > tibia_edge) & (np.abs(xx - centre_x) < half_width * (1.0 - 0.8 * np.clip(yy - tibia_edge, 0, 0.4)))
    return femur, tibia


def _sclerosis(femur: np.ndarray, tibia: np.ndarray, severity: float, size: int) -> np.ndarray:
    """A bright band along both bones' joint margins, denser with severity: float [S, S]."""
    depth = max(1, round(size * 0.04))
    band = np.zeros(femur.shape, dtype=np.float64)
    for bone in (femur, tibia):
        inner = ndimage.binary_erosion(bone, iterations=depth)
        band += bone & ~inner
    return band * (0.08 + 0.30 * severity)


def _osteophytes(rng, xx, yy, centre_x, joint_y, gap, half_width, severity) -> np.ndarray:
    """Bright bony spurs at the four corners of the joint, growing with severity: float [S, S]."""
    out = np.zeros(xx.shape, dtype=np.float64)
    radius = 0.005 + 0.05 * severity
    for side in (-1.0, 1.0):
        for edge in (-1.0, 1.0):
            x = centre_x + side * half_width * rng.uniform(0.95, 1.05)
            y = joint_y + edge * (gap / 2 + 0.02)
            out += 0.55 * (((xx - x) ** 2 + (yy - y) ** 2) < radius**2)
    return out
