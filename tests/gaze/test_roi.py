"""ROIs and new ground in fixed grid cells."""

from __future__ import annotations

import math

import pytest

from appliance.gaze.fixations import Fixation
from appliance.gaze.heatmap import HeatmapParams
from appliance.gaze.roi import RoiTracker


def fix(x: float, y: float, ms: float, ppd: float = 100.0, index: int = 0) -> Fixation:
    return Fixation(index, 0, int(ms * 1e6), x, y, ppd, int(ms / 5) + 1, 0.1)


def test_single_fixation_covers_the_predicted_disc() -> None:
    roi = RoiTracker(2000, 1600, HeatmapParams(sigma_deg=1.0, cell_px=8), threshold_s=0.05, cell_px=64)
    ground = roi.add_fixation(fix(1000.0, 800.0, 250))
    radius = 100.0 * math.sqrt(2 * math.log(0.25 / 0.05))  # sigma * sqrt(2 ln(d / thr)) = 179 px
    cells = set(ground.cells)
    assert (800 // 64, 1000 // 64) in cells
    for r, c in cells:  # every covered cell has a point within the radius
        x0, y0, x1, y1 = roi.cell_box(r, c)
        nx, ny = min(max(1000.0, x0), x1), min(max(800.0, y0), y1)
        assert math.hypot(nx - 1000.0, ny - 800.0) <= radius + 8
    assert (800 // 64, (1000 + 260) // 64) not in cells
    assert (800 // 64, (1000 + 150) // 64) in cells
    assert roi.contains(1000.0, 800.0) and not roi.contains(1000.0 + 300, 800.0)
    assert ground.boxes == tuple(roi.cell_box(r, c) for r, c in ground.cells)


def test_refixation_only_widens_the_rim() -> None:
    roi = RoiTracker(2000, 1600)
    first = set(roi.add_fixation(fix(1000.0, 800.0, 250)).cells)
    # Twice the dwell widens the disc from 1.79 to 2.15 sigma: new cells only at the rim.
    rim = roi.add_fixation(fix(1000.0, 800.0, 250, index=1))
    assert rim.cells and not (set(rim.cells) & first)
    r1 = 100.0 * math.sqrt(2 * math.log(0.25 / 0.05))
    for x0, y0, x1, y1 in rim.boxes:
        far_x = max(abs(x0 - 1000.0), abs(x1 - 1000.0))
        far_y = max(abs(y0 - 800.0), abs(y1 - 800.0))
        assert math.hypot(far_x, far_y) > r1
    # A tiny glance far inside the glanced region adds nothing.
    assert roi.add_fixation(fix(1000.0, 800.0, 1, index=2)).empty


def test_new_ground_is_disjoint_and_union_equals_batch() -> None:
    fixes = [fix(300.0, 300.0, 250, index=0), fix(1500.0, 1100.0, 400, index=1),
             fix(420.0, 330.0, 150, index=2), fix(1500.0, 300.0, 250, ppd=50.0, index=3)]
    live = RoiTracker(2000, 1600)
    seen: set = set()
    for f in fixes:
        new = set(live.add_fixation(f).cells)
        assert not (new & seen)
        seen |= new
    assert seen == live.covered_cells
    batch = RoiTracker(2000, 1600)
    for f in fixes:
        batch.add_fixation(f)
    assert batch.covered_cells == live.covered_cells


def test_rois_are_connected_regions() -> None:
    roi = RoiTracker(2000, 1600)
    roi.add_fixation(fix(300.0, 300.0, 300))
    roi.add_fixation(fix(1500.0, 1100.0, 600, index=1))
    boxes = roi.rois()
    assert len(boxes) == 2
    assert boxes[0].area_px >= boxes[1].area_px  # largest first: the longer fixation
    assert boxes[0].x0 < 1500 < boxes[0].x1 and boxes[0].y0 < 1100 < boxes[0].y1
    assert boxes[0].peak_s == pytest.approx(0.6, rel=0.01)
    assert roi.rois(min_area_px=10**7) == []


def test_cells_clip_at_image_edge() -> None:
    roi = RoiTracker(1000, 700, cell_px=64)
    ground = roi.add_fixation(fix(995.0, 695.0, 300))
    assert ground.cells
    for x0, y0, x1, y1 in ground.boxes:
        assert 0 <= x0 < x1 <= 1000 and 0 <= y0 < y1 <= 700
    assert max(c for _, c in ground.cells) == roi.grid.cols - 1


def test_bad_threshold_raises() -> None:
    with pytest.raises(ValueError):
        RoiTracker(100, 100, threshold_s=0.0)
