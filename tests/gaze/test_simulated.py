"""The simulated reader: determinism, parameters, what it dwells on."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from appliance.config import DisplayConfig
from appliance.gaze.csv_replay import read_gaze_csv, write_gaze_csv
from appliance.gaze.fixations import detect_fixations
from appliance.gaze.geometry import default_image_px_per_deg
from appliance.gaze.simulated import (
    MaTarget,
    ReaderParams,
    SimulatedSource,
    ma_targets_from_mask,
    simulate_reading,
)
from gaze_sample_helpers import same_samples

W, H = 1200, 900


def mask_with_dots() -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    for cx, cy in [(300, 300), (600, 450), (900, 600), (450, 700), (800, 200), (150, 500)]:
        mask[(xx - cx) ** 2 + (yy - cy) ** 2 <= 36] = 255
    return mask


def test_mask_components_become_targets() -> None:
    mas = ma_targets_from_mask(mask_with_dots())
    assert len(mas) == 6
    assert [m.index for m in mas] == list(range(6))
    assert any(m.x == pytest.approx(600.0) and m.y == pytest.approx(450.0) for m in mas)
    assert all(m.radius_px == pytest.approx(math.sqrt(113 / math.pi), rel=0.1) for m in mas)


def test_same_seed_same_reading_other_seed_differs() -> None:
    mas = ma_targets_from_mask(mask_with_dots())
    a = simulate_reading(W, H, mas, seed=11)
    b = simulate_reading(W, H, mas, seed=11)
    c = simulate_reading(W, H, mas, seed=12)
    assert same_samples(a.samples, b.samples) and a.dwelt == b.dwelt and a.intents == b.intents
    assert not same_samples(a.samples, c.samples)


def test_stream_shape_and_scale() -> None:
    reading = simulate_reading(W, H, seed=1)
    ts = np.array([s.timestamp_ns for s in reading.samples])
    assert np.all(np.diff(ts) == 5_000_000)  # 200 Hz
    ppd = default_image_px_per_deg(W, H, DisplayConfig())
    assert reading.px_per_deg == pytest.approx(ppd)
    assert all(s.px_per_deg == reading.px_per_deg and s.worn for s in reading.samples)
    assert any(math.isnan(s.x) for s in reading.samples)  # blinks
    assert {f.kind for f in reading.intents} == {"scan"}  # no MAs given


def test_scanpath_covers_the_fov() -> None:
    reading = simulate_reading(W, H, seed=2)
    xs = np.array([f.x for f in reading.intents])
    ys = np.array([f.y for f in reading.intents])
    assert xs.min() < 0.25 * W and xs.max() > 0.75 * W
    assert ys.min() < 0.25 * H and ys.max() > 0.75 * H
    fov = np.zeros((H, W), dtype=bool)
    fov[:, : W // 2] = True
    left_only = simulate_reading(W, H, seed=2, fov_mask=fov)
    assert max(f.x for f in left_only.intents) < W / 2 + 3 * left_only.px_per_deg


def test_tracker_error_and_offset_are_in_degrees() -> None:
    quiet = dict(precision_deg=0.0, blink_rate_hz=0.0, track_loss_prob=0.0)
    reading = simulate_reading(4000, 3000, params=ReaderParams(offset_deg=(1.0, -0.5), tracker_error_deg=0.0,
                                                                **quiet), seed=3)
    ppd = reading.px_per_deg
    first = reading.intents[0]
    s = next(s for s in reading.samples if s.timestamp_ns == first.start_ns)
    assert (s.x - first.x, s.y - first.y) == pytest.approx((ppd, -0.5 * ppd))
    noisy = simulate_reading(4000, 3000, params=ReaderParams(tracker_error_deg=1.5, **quiet), seed=4)
    by_t = {s.timestamp_ns: s for s in noisy.samples}
    errors = [math.hypot(by_t[f.start_ns].x - f.x, by_t[f.start_ns].y - f.y) / noisy.px_per_deg
              for f in noisy.intents]
    assert len(errors) > 50
    assert np.mean(errors) == pytest.approx(1.5, rel=0.2)


def test_dwelt_mas_have_dwell_fixations_and_detector_finds_them() -> None:
    mas = ma_targets_from_mask(mask_with_dots())
    params = ReaderParams(notice_prob=1.0, notice_radius_deg=50.0, blink_rate_hz=0.0, track_loss_prob=0.0)
    reading = simulate_reading(W, H, mas, params, seed=5)
    assert set(reading.dwelt) == {m.index for m in mas}  # certain noticing, nothing lost
    dwell = [f for f in reading.intents if f.kind == "dwell"]
    assert {f.ma_index for f in dwell} == set(reading.dwelt)
    assert all(f.end_ns - f.start_ns >= params.fixation_ms_min * 1e6 for f in reading.intents)
    fixes, counters = detect_fixations(reading.samples, image_size=(W, H))
    assert counters["malformed"] == 0 and len(fixes) >= 0.8 * len(reading.intents)


def test_track_loss_takes_dwells_away() -> None:
    mas = [MaTarget(0, 600.0, 450.0, 5.0)]
    lost = simulate_reading(W, H, mas, ReaderParams(notice_prob=1.0, notice_radius_deg=30.0,
                                                    track_loss_prob=1.0), seed=6)
    assert lost.dwelt == ()
    by_t = {s.timestamp_ns: s for s in lost.samples}
    assert all(math.isnan(by_t[f.start_ns].x) and math.isnan(by_t[f.end_ns].x) for f in lost.intents)
    assert detect_fixations(lost.samples, image_size=(W, H))[0] == []


def test_csv_round_trip_and_source(tmp_path: Path) -> None:
    reading = simulate_reading(W, H, ma_targets_from_mask(mask_with_dots()), seed=8)
    path = tmp_path / "sim.csv"
    write_gaze_csv(path, reading.samples)
    back = read_gaze_csv(path)
    assert len(back) == len(reading.samples)
    assert all(a.x == pytest.approx(b.x, abs=0.006) or (math.isnan(a.x) and math.isnan(b.x))
               for a, b in zip(back, reading.samples))
    assert back[0].px_per_deg == pytest.approx(reading.px_per_deg, abs=1e-4)
    src = SimulatedSource(reading)
    assert src.receive(0) == reading.samples[0] and src.kind == "simulated"


def test_bad_params_raise() -> None:
    with pytest.raises(ValueError):
        ReaderParams(notice_prob=1.5)
    with pytest.raises(ValueError):
        ReaderParams(sample_rate_hz=0.0)
    with pytest.raises(ValueError):
        simulate_reading(0, 10)
