"""The sliced Wasserstein distance of odmaug.metrics.swd against its references: ProGAN's pyramid
(scipy.ndimage.convolve, mode 'mirror', as ProGAN's metrics/sliced_wasserstein.py computes it),
scipy.stats.wasserstein_distance, and closed forms (a translated distribution)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch

from odmaug.errors import OdmaugError
from odmaug.metrics.swd import (
    laplacian_pyramid,
    pyr_down,
    pyr_up,
    pyramid_resolutions,
    quantile_steps,
    random_directions,
    sliced_wasserstein,
    swd,
    swd_reference,
    wasserstein_1d,
)

# ProGAN's gaussian_filter (metrics/sliced_wasserstein.py)
PROGAN_FILTER = np.float64([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6],
                            [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256.0


def progan_pyr_down(x: np.ndarray) -> np.ndarray:
    return scipy.ndimage.convolve(x, PROGAN_FILTER[None, None], mode="mirror")[:, :, ::2, ::2]


def progan_pyr_up(x: np.ndarray) -> np.ndarray:
    s = x.shape
    res = np.zeros((s[0], s[1], s[2] * 2, s[3] * 2), x.dtype)
    res[:, :, ::2, ::2] = x
    return scipy.ndimage.convolve(res, PROGAN_FILTER[None, None] * 4.0, mode="mirror")


def textures(n: int, seed: int, size: int = 32, shift: float = 0.0) -> torch.Tensor:
    """A distribution of images: smoothed noise of random contrast around grey, float 0..255 [n, 3, size, size]."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)
    smooth = torch.from_numpy(scipy.ndimage.gaussian_filter(noise.numpy(), sigma=(0, 0, 1.0, 1.0), mode="wrap"))
    contrast = 40 + 20 * torch.rand(n, 1, 1, 1, generator=g, dtype=torch.float64)
    return (128 + shift + contrast * smooth / smooth.std()).float()


def test_pyramid_matches_progan_and_inverts():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 255
    np.testing.assert_allclose(pyr_down(x).numpy(), progan_pyr_down(x.numpy()), rtol=1e-12, atol=1e-9)
    small = pyr_down(x)
    np.testing.assert_allclose(pyr_up(small).numpy(), progan_pyr_up(small.numpy()), rtol=1e-12, atol=1e-9)
    levels = laplacian_pyramid(x.double(), 3)
    assert [tuple(level.shape) for level in levels] == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8)]
    # ProGAN's generate_laplacian_pyramid on the same input
    ref = [x.numpy().astype(np.float32)]
    for _ in range(1, 3):
        ref.append(progan_pyr_down(ref[-1].astype(np.float64)).astype(np.float32))
        ref[-2] -= progan_pyr_up(ref[-1].astype(np.float64)).astype(np.float32)
    for ours, theirs in zip(laplacian_pyramid(x.float(), 3), ref):
        np.testing.assert_allclose(ours.numpy(), theirs, atol=2e-3)
    rebuilt = levels[-1]  # collapsing the pyramid gives the image back exactly
    for detail in reversed(levels[:-1]):
        rebuilt = detail + pyr_up(rebuilt)
    np.testing.assert_allclose(rebuilt.numpy(), x.numpy(), atol=1e-9)


def test_resolutions_and_odd_sizes():
    assert pyramid_resolutions(32) == [32, 16]
    assert pyramid_resolutions(64) == [64, 32, 16]
    assert pyramid_resolutions(16) == [16]
    with pytest.raises(OdmaugError, match="smaller than"):
        pyramid_resolutions(8)
    odd = laplacian_pyramid(torch.rand(1, 3, 20, 20), 2)
    assert [tuple(level.shape) for level in odd] == [(1, 3, 20, 20), (1, 3, 10, 10)]


@pytest.mark.parametrize("n, m", [(200, 200), (200, 73), (5, 311), (1, 2)])
def test_wasserstein_1d_equals_scipy(n, m):
    g = np.random.default_rng(n + m)
    a = g.standard_normal((n, 147))
    b = 0.5 + 1.3 * g.standard_normal((m, 147))
    b[:, :3] = np.round(b[:, :3])  # ties inside a set and across sets
    a[:, :3] = np.round(a[:, :3])
    dirs = random_directions(147, 20, torch.Generator().manual_seed(1), np.float64)
    pa, pb = (a @ dirs).T, (b @ dirs).T  # [20, n], [20, m]
    ours = wasserstein_1d(pa, pb)
    theirs = np.array([scipy.stats.wasserstein_distance(pa[k], pb[k]) for k in range(20)])
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    ties = wasserstein_1d(np.round(pa), np.round(pb))
    np.testing.assert_allclose(ties, [scipy.stats.wasserstein_distance(np.round(pa[k]), np.round(pb[k])) for k in range(20)],
                               rtol=1e-10, atol=1e-12)
    assert sliced_wasserstein(a, b, dirs) == pytest.approx(theirs.mean(), rel=1e-10)
    if n == m:  # ProGAN's form: mean |sorted - sorted|
        np.testing.assert_allclose(ours, np.abs(np.sort(pa, 1) - np.sort(pb, 1)).mean(1), rtol=1e-12)


def test_quantile_steps_cover_the_unit_interval():
    widths, ia, ib = quantile_steps(4, 6)  # breakpoints 1/4, 1/6, 1/3, 1/2, 2/3, 3/4, 5/6, 1
    np.testing.assert_allclose(widths, [1 / 6, 1 / 12, 1 / 12, 1 / 6, 1 / 6, 1 / 12, 1 / 12, 1 / 6])
    assert ia.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert ib.tolist() == [0, 1, 1, 2, 3, 4, 4, 5]


def test_directions_are_unit_vectors():
    dirs = random_directions(147, 512, torch.Generator().manual_seed(0), np.float64)
    assert dirs.shape == (147, 512)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=0), 1.0, rtol=1e-12)


def test_same_distribution_near_zero_and_grows_with_shift_and_blur():
    ref = swd_reference(textures(96, seed=0), seed=0)
    same = swd(ref, textures(96, seed=1), seed=1)["mean"]
    shifted = [swd(ref, textures(96, seed=1, shift=s), seed=1)["mean"] for s in (10.0, 30.0)]
    blurred_1 = textures(96, seed=1)
    blurred_2 = pyr_up(pyr_down(blurred_1), (32, 32))  # removes the finest octave
    blurred = [swd(ref, torch.from_numpy(scipy.ndimage.gaussian_filter(blurred_1.numpy(), (0, 0, s, s))), seed=1)["mean"]
               for s in (0.7, 1.5)]
    # measured: same 0.029; shifts 10, 30: 0.13, 0.35; blurs 0.7, 1.5 px: 0.16, 0.40
    assert same < 0.05
    assert 3 * same < shifted[0] < shifted[1]
    assert 3 * same < blurred[0] < blurred[1]
    # the finest octave removed: the 32 px (detail) level sees it, far above sampling noise
    assert swd(ref, blurred_2, seed=1)["levels"][32] > 10 * same


def test_translation_gives_its_exact_distance():
    """Same images and positions, brightness + delta: the detail level does not move (the blur
    keeps constants), and on the coarse level every projection moves by delta * sum_k d_k / std_c(k),
    which is the Wasserstein-1 distance of a translated distribution."""
    images = textures(40, seed=3)
    ref = swd_reference(images, seed=5)
    assert swd(ref, images, seed=5)["mean"] == 0.0
    delta = 12.0
    out = swd(ref, images + delta, seed=5, directions=64)
    assert out["levels"][32] == pytest.approx(0.0, abs=1e-4)
    dirs = random_directions(147, 64, torch.Generator().manual_seed(5), np.float64)
    per_channel = np.repeat(delta / ref.std[1].double().view(3).numpy(), 49)  # descriptor order: C, 7, 7
    expected = np.abs(per_channel @ dirs).mean()
    assert out["levels"][16] == pytest.approx(expected, rel=1e-3)


def test_deterministic_given_seed():
    ref_a = swd_reference(textures(24, seed=0), seed=2)
    ref_b = swd_reference(textures(24, seed=0), seed=2)
    np.testing.assert_array_equal(ref_a.descriptors[0], ref_b.descriptors[0])
    fake = textures(24, seed=9)
    assert swd(ref_a, fake, seed=4) == swd(ref_b, fake, seed=4)
    assert swd(ref_a, fake, seed=4)["mean"] != swd(ref_a, fake, seed=5)["mean"]


def test_bad_inputs():
    ref = swd_reference(textures(4, seed=0), per_image=8)
    with pytest.raises(OdmaugError, match="reference was made at 32 px"):
        swd(ref, textures(4, seed=0, size=16))
    with pytest.raises(OdmaugError, match="empty"):
        swd(ref, torch.empty(0, 3, 32, 32))
    with pytest.raises(OdmaugError, match="same D"):
        wasserstein_1d(np.zeros((2, 3)), np.zeros((4, 3)))
    with pytest.raises(OdmaugError, match="non-empty"):
        wasserstein_1d(np.zeros((2, 3)), np.zeros((2, 0)))
