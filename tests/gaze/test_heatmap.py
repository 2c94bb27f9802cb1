"""Gaussian heat map with sigma in degrees, duration weighted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.gaze.fixations import Fixation
from appliance.gaze.heatmap import GazeHeatmap, HeatmapParams


def fix(x: float, y: float, ms: float, ppd: float = 100.0, index: int = 0) -> Fixation:
    return Fixation(index, 0, int(ms * 1e6), x, y, ppd, int(ms / 5) + 1, 0.1)


def test_peak_is_duration_and_sigma_is_in_degrees() -> None:
    hm = GazeHeatmap(1600, 1200, HeatmapParams(sigma_deg=1.0, cell_px=8))
    # Centre of heat cell (50, 60) is image point (404, 484).
    hm.add_fixation(fix(404.0, 484.0, 300))
    assert hm.value_at(404.0, 484.0) == pytest.approx(0.3)
    # 104 px (1.04 deg, the centre of a heat cell) to the right: 0.3 * exp(-1.04**2 / 2).
    assert hm.value_at(508.0, 484.0) == pytest.approx(0.3 * math.exp(-0.5 * 1.04 ** 2), rel=1e-6)
    assert hm.fixations_added == 1


def test_zoomed_fixation_is_narrower() -> None:
    fitted = GazeHeatmap(1600, 1200)
    zoomed = GazeHeatmap(1600, 1200)
    fitted.add_fixation(fix(404.0, 484.0, 300, ppd=100.0))
    zoomed.add_fixation(fix(404.0, 484.0, 300, ppd=50.0))
    assert zoomed.value_at(404.0, 484.0) == pytest.approx(fitted.value_at(404.0, 484.0))
    assert zoomed.value_at(504.0, 484.0) < 0.5 * fitted.value_at(504.0, 484.0)


def test_updates_add_up() -> None:
    a = GazeHeatmap(800, 600)
    a.add_fixation(fix(200.0, 200.0, 200))
    a.add_fixation(fix(260.0, 220.0, 100))
    b = GazeHeatmap(800, 600)
    b.add_fixation(fix(260.0, 220.0, 100))
    b.add_fixation(fix(200.0, 200.0, 200))
    np.testing.assert_allclose(a.heat, b.heat, rtol=1e-12)


def test_region_and_edges() -> None:
    hm = GazeHeatmap(800, 600)
    region = hm.add_fixation(fix(2.0, 3.0, 200))
    assert region.r0 == 0 and region.c0 == 0 and not region.empty
    far = hm.add(-5000.0, -5000.0, 100.0, 0.2)
    assert far.empty
    assert hm.value_at(-1.0, 0.0) == 0.0
    assert hm.to_image().shape == (600, 800)


def test_reduced_resolution_shape() -> None:
    hm = GazeHeatmap(4288, 2848, HeatmapParams(cell_px=8))
    assert hm.shape == (356, 536)


def test_bad_input_raises() -> None:
    hm = GazeHeatmap(100, 100)
    with pytest.raises(ValueError):
        hm.add(math.nan, 1.0, 100.0, 0.1)
    with pytest.raises(ValueError):
        hm.add(1.0, 1.0, 0.0, 0.1)
    with pytest.raises(ValueError):
        HeatmapParams(sigma_deg=0.0)
