"""Image-quality check flags blurred and dark photographs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance.imaging.fov import find_fov
from appliance.imaging.normalise import green_channel, normalised_green
from appliance.imaging.quality import check_quality


def _fundus(seed=0, size=600):
    """A synthetic sharp fundus: orange disc, dark vessels, speckle texture, dark dots."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    inside = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 <= (0.45 * size) ** 2
    base = np.full((size, size), 110.0) + rng.normal(0, 6, (size, size))
    base = cv2.GaussianBlur(base.astype(np.float32), (0, 0), 0.8)
    for k in range(8):
        a = rng.uniform(0, np.pi)
        p0 = (int(size / 2 + 250 * np.cos(a)), int(size / 2 + 250 * np.sin(a)))
        p1 = (int(size / 2 - 250 * np.cos(a)), int(size / 2 - 250 * np.sin(a)))
        cv2.line(base, p0, p1, 70.0, 2 + k % 3)
    for _ in range(20):
        cv2.circle(base, (int(rng.uniform(100, 500)), int(rng.uniform(100, 500))), 2, 75.0, -1)
    g = np.clip(base, 0, 255)
    img[..., 0] = np.clip(g * 1.6, 0, 255).astype(np.uint8)
    img[..., 1] = g.astype(np.uint8)
    img[..., 2] = (g * 0.3).astype(np.uint8)
    img[~inside] = 0
    return img


UM = 10.0  # µm per px of the synthetic image


def test_sharp_photograph_is_gradable():
    img = _fundus()
    report = check_quality(img, find_fov(img), UM)
    assert report.gradable, report.reasons
    assert set(report.measures) >= {"focus", "median_luma", "dark_fraction", "circle_coverage"}


def test_blurred_photograph_is_ungradable():
    img = _fundus()
    fov = find_fov(img)
    blurred = cv2.GaussianBlur(img, (0, 0), 6)
    report = check_quality(blurred, fov, UM)
    assert not report.gradable
    assert set(report.reasons) == {"focus"}
    assert "out of focus" in report.reasons["focus"]


def test_dark_photograph_is_ungradable():
    img = _fundus()
    fov = find_fov(img)
    dark = (img * 0.12).astype(np.uint8)
    report = check_quality(dark, fov, UM)
    assert not report.gradable
    assert {"median_luma", "dark_fraction"} & set(report.reasons)


def test_tiny_field_of_view_is_ungradable():
    img = _fundus()
    img[:, :] = 0
    img[280:320, 280:320] = (160, 110, 30)
    report = check_quality(img, find_fov(img), UM)
    assert not report.gradable


def test_crop_inside_the_aperture_is_ungradable_unless_its_scale_is_configured():
    # No edge of the aperture in the photograph: the FOV circle, and the scale from it, are guesses.
    crop = np.ascontiguousarray(_fundus()[170:430, 170:430])
    fov = find_fov(crop)
    assert not fov.edge_seen
    guessed = check_quality(crop, fov, UM)
    assert not guessed.gradable
    assert set(guessed.reasons) == {"fov_edge"}
    assert "um_per_px" in guessed.reasons["fov_edge"]
    assert check_quality(crop, fov, UM, scale_known=True).gradable


def test_a_thumbnail_is_ungradable_for_its_resolution_not_called_out_of_focus():
    # A 300 px preview of a 45° photograph is ~47 µm a pixel: its small MAs are gone, and the
    # 20-40 µm detail the focus measure reads cannot exist, so "out of focus" would mislead.
    img = _fundus()
    fov = find_fov(img)
    report = check_quality(img, fov, 47.0)
    assert set(report.reasons) == {"resolution"}
    assert "47 µm per pixel" in report.reasons["resolution"] and "full-size" in report.reasons["resolution"]
    assert check_quality(img, fov, 24.0).gradable  # the smallest photographs in use pass


def test_normalised_green_is_weber_contrast():
    img = _fundus()
    fov = find_fov(img)
    norm, inside, factor = normalised_green(img, fov.mask, UM, work_um_per_px=20.0)
    assert factor == 2
    assert np.median(norm[inside]) == pytest.approx(1.0, abs=0.05)
    assert norm[~inside].max() == 0.0
    with pytest.raises(ValueError):
        green_channel(np.zeros((3, 3), np.uint8))
