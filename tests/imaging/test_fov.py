"""Field of view on synthetic discs, including a circle cropped like IDRiD's."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.imaging.fov import find_fov


def _disc(h, w, cx, cy, r, level=120):
    yy, xx = np.mgrid[:h, :w]
    img = np.zeros((h, w, 3), np.uint8)
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
    img[inside] = (level + 40, level, level // 3)
    return img, inside


def test_full_disc_centre_radius_and_mask():
    img, inside = _disc(400, 500, 250, 200, 180)
    fov = find_fov(img)
    assert fov.center_xy == pytest.approx((250, 200), abs=2)
    assert fov.radius_px == pytest.approx(180, abs=2)
    assert fov.diameter_px == pytest.approx(2 * fov.radius_px)
    assert fov.mask.shape == (400, 500)
    assert (fov.mask ^ inside).mean() < 0.01


def test_cropped_circle_keeps_the_true_diameter():
    # Like IDRiD: the circle is cut by the top and bottom edges of the image.
    img, _ = _disc(300, 420, 210, 150, 200)
    fov = find_fov(img)
    assert fov.radius_px == pytest.approx(200, rel=0.02)
    assert fov.coverage < 0.95
    assert fov.edge_seen


@pytest.mark.parametrize("margin", [30, 50, 70])
def test_grey_margin_is_not_taken_for_retina(margin):
    # A hazy or contrast-stretched photograph: the margin is grey, not black. Taking it for
    # retina would make the FOV the whole frame and the pixel scale 30 % wrong.
    img, inside = _disc(400, 500, 250, 200, 180)
    img[~inside] = margin
    fov = find_fov(img)
    assert fov.radius_px == pytest.approx(180, abs=2)
    assert (fov.mask ^ inside).mean() < 0.01


def test_dim_periphery_above_a_grey_margin_stays_in_the_fov():
    img, inside = _disc(400, 500, 250, 200, 180)
    yy, xx = np.mgrid[:400, :500]
    rim = inside & ((xx - 250) ** 2 + (yy - 200) ** 2 > 150 ** 2)
    img[~inside] = 40
    img[rim] = (75, 60, 50)  # a vignetted rim, well below the centre's 160 but above the margin
    fov = find_fov(img)
    assert fov.radius_px == pytest.approx(180, abs=2)
    assert fov.mask[rim].mean() > 0.95


def test_retina_in_two_corners_does_not_raise_the_threshold():
    # Cropped into the circle on one side: the left corners hold retina, the right ones margin.
    img, inside = _disc(300, 300, 60, 150, 200)
    xx = np.mgrid[:300, :300][1]
    img[inside & (xx < 30)] = (100, 70, 40)  # vignetted retina in the left corners
    dim = inside & (xx > 200)
    img[dim] = (45, 30, 20)  # a dim band of retina near the aperture's rim
    fov = find_fov(img)
    assert fov.mask[dim].mean() > 0.95


def test_dim_textured_corners_of_a_crop_inside_the_aperture_are_not_margin():
    # Cropped inside the aperture, heavy vignetting: the corners are dim retina, not a margin.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:300, :300]
    fall = np.hypot(xx - 150, yy - 150) / np.hypot(150, 150)
    level = 170 - 115 * fall ** 2 + rng.normal(0, 6, (300, 300))
    img = np.clip(np.stack([level, level * 0.55, level * 0.25], axis=2), 0, 255).astype(np.uint8)
    fov = find_fov(img)
    assert fov.mask.mean() > 0.99
    assert not fov.edge_seen  # so the scale is a guess, which the quality check reports


def test_dark_lesions_inside_do_not_make_holes():
    img, inside = _disc(300, 300, 150, 150, 120)
    img[140:160, 140:160] = 0
    fov = find_fov(img)
    assert fov.mask[150, 150]


def test_crop_pads_outside_the_image():
    img, _ = _disc(100, 100, 50, 50, 40)
    fov = find_fov(img)
    crop = fov.crop(-10, -10, 20, 20)
    assert crop.shape == (30, 30)
    assert not crop[:10].any()


def test_rejects_wrong_shape():
    with pytest.raises(ValueError):
        find_fov(np.zeros((4, 4, 2), np.uint8))
