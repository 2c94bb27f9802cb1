"""Pixel scale from the FOV diameter and the camera's field angle."""

from __future__ import annotations

import pytest

from appliance.errors import ConfigError
from appliance.imaging.scale import UM_PER_DEG, photograph_scale, px_from_um, um_per_px


def test_idrid_scale():
    # Kowa VX-10α, 50°, FOV about 3410 px across: about 4.25 µm per px.
    assert um_per_px(3410, 50.0) == pytest.approx(50 * UM_PER_DEG / 3410)
    assert 4.0 < um_per_px(3410, 50.0) < 4.5


def test_scale_follows_resolution_and_angle():
    assert um_per_px(1700, 50) == pytest.approx(2 * um_per_px(3400, 50))
    assert um_per_px(3400, 45) < um_per_px(3400, 50)
    assert px_from_um(100.0, 4.0) == pytest.approx(25.0)


@pytest.mark.parametrize("diameter, angle", [(0, 45), (-5, 45), (1000, 1), (1000, 500)])
def test_rejects_implausible_values(diameter, angle):
    with pytest.raises(ValueError):
        um_per_px(diameter, angle)


def test_a_configured_pixel_size_wins_over_the_field_of_view():
    assert photograph_scale(3410, 50.0) == pytest.approx(um_per_px(3410, 50.0))
    assert photograph_scale(3410, 50.0, configured_um_per_px=6.5) == 6.5


@pytest.mark.parametrize("angle, configured", [(500.0, 0.0), (45.0, -1.0)])
def test_bad_scale_settings_are_configuration_errors(angle, configured):
    # A technician's setting to correct, named, rather than a traceback.
    with pytest.raises(ConfigError, match="fov_deg|um_per_px"):
        photograph_scale(3410, angle, configured)
