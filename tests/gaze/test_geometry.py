"""Display geometry and the viewer transform."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.config import DisplayConfig
from appliance.gaze.geometry import ViewTransform, default_image_px_per_deg, screen_px_per_deg


def test_screen_px_per_deg_matches_visual_angle() -> None:
    display = DisplayConfig(width_mm=344.0, height_mm=194.0, width_px=1920, height_px=1080,
                            viewing_distance_mm=550.0)
    ppd = screen_px_per_deg(display)
    # Independent check: the screen px spanned by the angle between 0 and 1 deg off-axis.
    px_per_mm = 0.5 * (1920 / 344.0 + 1080 / 194.0)
    assert ppd == pytest.approx(550.0 * math.tan(math.radians(1.0)) * px_per_mm, rel=1e-3)
    assert 40 < ppd < 70  # DESIGN.md: 40-70 screen px per degree at 50-60 cm


def test_screen_px_per_deg_scales_with_distance() -> None:
    near = screen_px_per_deg(DisplayConfig(viewing_distance_mm=400.0))
    far = screen_px_per_deg(DisplayConfig(viewing_distance_mm=800.0))
    assert far == pytest.approx(2 * near, rel=1e-3)


def test_bad_display_raises() -> None:
    with pytest.raises(ValueError):
        screen_px_per_deg(DisplayConfig(viewing_distance_mm=0.0))


def test_fitted_view_letterboxes_and_centres() -> None:
    view = ViewTransform(4288, 2848, 1920, 1080)
    assert view.fit_scale == pytest.approx(1080 / 2848)
    assert view.image_to_screen(2144.0, 1424.0) == pytest.approx((960.0, 540.0))
    x0, y0 = view.image_to_screen(0.0, 0.0)
    x1, y1 = view.image_to_screen(4288.0, 2848.0)
    assert y0 == pytest.approx(0.0) and y1 == pytest.approx(1080.0)
    assert 0 < x0 < x1 < 1920  # pillar-boxed horizontally


def test_round_trip_arrays() -> None:
    view = ViewTransform(3410, 2848, 1920, 1080, zoom=2.5, center_x=1000.0, center_y=700.0)
    xs = np.array([0.0, 100.5, 1919.0])
    ys = np.array([0.0, 540.0, 1079.0])
    ix, iy = view.screen_to_image(xs, ys)
    bx, by = view.image_to_screen(ix, iy)
    np.testing.assert_allclose(bx, xs, atol=1e-9)
    np.testing.assert_allclose(by, ys, atol=1e-9)


def test_zoom_doubles_screen_scale_and_halves_image_px_per_deg() -> None:
    display = DisplayConfig()
    spd = screen_px_per_deg(display)
    fit = ViewTransform.fitted(4288, 2848, display)
    zoomed = fit.with_zoom(2.0)
    # Zooming by 2 doubles screen px per image px ...
    assert zoomed.scale == pytest.approx(2 * fit.scale)
    # ... so one degree covers half as many image px: a finer gaze map.
    assert zoomed.image_px_per_deg(spd) == pytest.approx(fit.image_px_per_deg(spd) / 2)


def test_zoom_about_anchor_keeps_the_point_under_the_finger() -> None:
    view = ViewTransform(4288, 2848, 1920, 1080)
    anchor = (300.0, 200.0)
    before = view.screen_to_image(*anchor)
    after = view.with_zoom(3.0, anchor_screen=anchor)
    assert after.screen_to_image(*anchor) == pytest.approx(before)


def test_pan_moves_centre() -> None:
    view = ViewTransform(1000, 1000, 500, 500).with_pan(100.0, 200.0)
    assert view.screen_to_image(250.0, 250.0) == pytest.approx((100.0, 200.0))


def test_bad_zoom_raises() -> None:
    with pytest.raises(ValueError):
        ViewTransform(100, 100, 100, 100, zoom=0.0)
    with pytest.raises(ValueError):
        ViewTransform(100, 100, 100, 100, zoom=math.nan)


def test_default_image_px_per_deg_for_idrid_size() -> None:
    display = DisplayConfig()
    ppd = default_image_px_per_deg(4288, 2848, display)
    assert ppd == pytest.approx(screen_px_per_deg(display) * 2848 / 1080)
