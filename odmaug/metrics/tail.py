"""Whether a few real images carry most of the real features' spread, which FID then turns on.

FID fits a Gaussian to each feature set; every image adds its squared distance from the mean to
the covariance's trace. When a few real images lie far from the rest (a distinct acquisition type,
or a classifier's features growing large on inputs unlike its training images), they carry most of
that trace, and FID turns on whether the generated set happens to hold a few images like them, not
on how the rest look. Measured on RetinaMNIST under a resnet18 grade classifier's features: the 2%
of the 1,080 training images farthest from the mean hold 74% of the trace (among them 16
borderless, zoomed-in photographs with feature norms ~165 against a median of 20), and two sets of
64 generated images per grade that look alike score FID 29 (5 such images among them) and 376
(none); without those images, 23 and 28.

:func:`real_tail_share` is the share of the trace held by the :data:`TAIL_FRACTION` of real images
farthest from their mean (Gaussian features: about that fraction; tests/test_metrics_tail.py). From
:data:`TAIL_DOMINATED` up (on at least :data:`TAIL_MIN_IMAGES` real images), tables mark the FID
with :data:`TAIL_MARK`: compare KID, precision and recall, and look at those images.
"""

from __future__ import annotations

import numpy as np

TAIL_FRACTION = 0.02
TAIL_DOMINATED = 0.5
TAIL_MIN_IMAGES = 50
"""Below 1 / TAIL_FRACTION real images the tail is a single image (of two images, one always holds
half the trace): the share is reported, the FID not marked."""
TAIL_MARK = "‡"
TAIL_NOTE = (f"{TAIL_MARK} FID rests on a few real images: the {TAIL_FRACTION:.0%} farthest from the rest hold "
             f"{TAIL_DOMINATED:.0%} or more of the real features' variance, so whether a generated set holds a few "
             "images like them moves FID more than the rest does; compare KID and precision/recall.")


def real_tail_share(real: np.ndarray, fraction: float = TAIL_FRACTION) -> float:
    """Share in [0, 1] of the trace of the covariance of ``real`` (features [N, D]) held by the
    ``ceil(fraction * N)`` rows farthest from the mean (squared Euclidean distance); 0.0 when
    every row is the same.

    Raises:
        ValueError: ``real`` is not [N, D] with N >= 1, or ``fraction`` is outside (0, 1].
    """
    real = np.asarray(real, dtype=np.float64)
    if real.ndim != 2 or len(real) == 0:
        raise ValueError(f"features must be [N, D] with N >= 1; got {list(real.shape)}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    distances = ((real - real.mean(0)) ** 2).sum(1)  # each row's share of N-1 times the trace
    total = distances.sum()
    if total == 0.0:
        return 0.0
    k = int(np.ceil(fraction * len(real)))
    return float(np.sort(distances)[-k:].sum() / total)


def tail_dominated(share: float, n_real: int) -> bool:
    """Whether a FID is marked :data:`TAIL_MARK`: ``share`` (:func:`real_tail_share` of ``n_real``
    real images) at least :data:`TAIL_DOMINATED`, on at least :data:`TAIL_MIN_IMAGES` images."""
    return n_real >= TAIL_MIN_IMAGES and share >= TAIL_DOMINATED
