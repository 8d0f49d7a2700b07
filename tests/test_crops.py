"""The fundus crop's box ignores overlays in the black border: date stamps, edge lines, thin lines.

Hand-computed boxes: a disc of centre (cx, cy) and radius r, drawn where (x - cx)^2 + (y - cy)^2
<= r^2, holds 2 * isqrt(r^2 - dx^2) + 1 pixels in the column at offset dx (rows alike). A column
counts when it holds at least LINE_SHARE (1 %) of the fullest one, 2r + 1 pixels (the image's
height for a disc cut at top and bottom), and at least one pixel. For r = 380 that is 8 of 761
pixels, so isqrt(380^2 - dx^2) >= 4, |dx| <= 379: the box (cx - 379, cy - 379, cx + 380, cy + 380)
(right/bottom exclusive). Every overlay case must give that box exactly, not within a pixel: the
edge is measured at full resolution with the same rule as on a clean image, and an overlay is
either away from the field of view (not searched) or adds one pixel per row or column beside the
disc, under 1 % of its width.
"""

from __future__ import annotations

import numpy as np
import pytest

from odmaug.data.crops import crop_image, fundus_box


def disc(height: int = 800, width: int = 1000, cx: int = 500, cy: int = 400, r: int = 380) -> np.ndarray:
    """A vignetted orange disc (the rim half as bright as the centre) on black with noise 0..7, uint8 [H, W, 3]."""
    yy, xx = np.ogrid[:height, :width]
    d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2
    shade = np.where(d2 <= 1, 1 - 0.5 * d2, 0)[..., None]
    noise = np.random.default_rng(0).integers(0, 8, (height, width, 3))
    return np.clip(shade * np.array([200, 120, 60]) + noise, 0, 255).astype(np.uint8)


CLEAN = (121, 21, 880, 780)  # disc(): (500 - 379, 400 - 379, 500 + 380, 400 + 380), the box


CUT = (51, 0, 950, 800)  # disc(r=450)


def test_clean_discs_keep_their_exact_box():
    assert fundus_box(disc()) == CLEAN
    assert fundus_box(disc()[..., 0]) == CLEAN  # greyscale [H, W]
    # A disc cut at top and bottom (EyePACS): every row, columns with >= 8 of 800 pixels (|dx| <= 449).
    assert fundus_box(disc(r=450)) == CUT
    # A small photo (sampled at every pixel): >= 2 of 121 pixels, |dx| <= 59.
    assert fundus_box(disc(200, 300, cx=110, cy=90, r=60)) == (51, 31, 170, 150)


def stamp(image: np.ndarray, left: int, top: int, width: int = 60, height: int = 12) -> np.ndarray:
    out = image.copy()
    out[top:top + height, left:left + width] = 255  # white text block, brighter than the retina
    return out


def test_a_date_stamp_in_the_border_does_not_move_the_box():
    stamped = stamp(disc(), 15, 20)  # the case: it moved the box to (15, 20, 880, 780)
    assert fundus_box(stamped) == CLEAN
    # Inside the bounding square of a cut disc but far from the disc itself (a corner of the box).
    assert fundus_box(stamp(disc(r=450), 60, 10)) == CUT
    # Side by side with the clean image, the crop (and so the disc's place at 64 px) is the same.
    assert np.array_equal(crop_image(stamped, "fundus")[:, :, 1], crop_image(disc(), "fundus")[:, :, 1])


@pytest.mark.parametrize("edge", ["top", "bottom", "left", "right"])
def test_a_one_pixel_line_along_an_image_edge_does_not_move_the_box(edge):
    image = disc()
    line = {"top": (0, slice(None)), "bottom": (-1, slice(None)), "left": (slice(None), 0), "right": (slice(None), -1)}
    image[line[edge]] = 255
    assert fundus_box(image) == CLEAN
    cut = disc(r=450)  # the line touches the cut disc at the top and bottom edges
    cut[line[edge]] = 255
    assert fundus_box(cut) == CUT


def test_one_pixel_lines_crossing_the_border_into_the_disc_do_not_move_the_box():
    image = disc()
    image[400, :500] = 255  # from the left edge into the disc's centre
    image[:400, 500] = 255  # from the top edge into the disc's centre
    np.fill_diagonal(image[:, :, 1], 255)  # a diagonal through the corner, the border and the disc
    assert fundus_box(image) == CLEAN


@pytest.mark.parametrize("row, col", [(18, 117), (19, 118), (781, 881), (782, 882)])
def test_lines_just_beside_the_disc_do_not_move_the_box(row, col):
    # The disc's outermost pixels are (500, 20), (500, 780), (120, 400), (880, 400); these lines pass
    # one or two pixels outside them, inside the margin searched at full resolution.
    image = disc()
    image[row, :] = 255  # full-width 1-pixel line
    image[:, col:col + 2] = 255  # full-height 2-pixel line
    assert fundus_box(image) == CLEAN


def test_a_line_through_the_disc_outermost_pixel_moves_that_side_by_one_pixel():
    # Within one pixel, not exact: row 20 holds the disc's top pixel, and beside the disc's rows 21
    # and 22 (55 and 77 pixels wide) the line makes vertical runs of three, so row 20 counts 55
    # pixels, over 1 % of 761: it is the disc's own row, which a clean image drops for its 1 pixel.
    image = disc()
    image[20, :] = 255
    assert fundus_box(image) == (121, 20, 880, 780)
    image = disc()
    image[:, 879] = 255  # column 879 holds 55 disc pixels beside the line at 880 (rows 373..427)
    assert fundus_box(image) == CLEAN
    image[:, 880] = 255  # through the rightmost pixel (880, 400): column 880 is now counted
    assert fundus_box(image) == (121, 21, 881, 780)


def test_nothing_but_lines_or_noise_keeps_the_whole_image():
    black = np.random.default_rng(1).integers(0, 8, (120, 160, 3)).astype(np.uint8)
    assert fundus_box(black) == (0, 0, 160, 120)
    black[60, :] = 255  # a line is not a field of view
    assert fundus_box(black) == (0, 0, 160, 120)
