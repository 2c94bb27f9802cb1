"""I-DT fixation detection, including every kind of bad sample."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.gaze.base import GazeSample
from appliance.gaze.fixations import COUNTER_KEYS, FixationDetector, FixationParams, detect_fixations
from gaze_sample_helpers import PPD, STEP_NS, fixation, next_t, no_gaze

SIZE = (2000, 1500)


def two_fixations(gap: list[GazeSample] | None = None) -> list[GazeSample]:
    a = fixation(0, 500.0, 400.0, 300)
    b = fixation(next_t(a), 1200.0, 900.0, 250, seed=1)
    return a + b


def test_two_clean_fixations() -> None:
    fixes, counters = detect_fixations(two_fixations(), image_size=SIZE)
    assert len(fixes) == 2
    assert (fixes[0].x, fixes[0].y) == pytest.approx((500.0, 400.0), abs=1.0)
    assert (fixes[1].x, fixes[1].y) == pytest.approx((1200.0, 900.0), abs=1.0)
    assert fixes[0].duration_ms == pytest.approx(300.0)
    assert fixes[1].duration_ms == pytest.approx(250.0)
    assert [f.index for f in fixes] == [0, 1]
    assert counters["accepted"] == len(two_fixations())
    assert counters["fixations"] == 2


def test_dispersion_is_in_degrees() -> None:
    # 60 px of spread: under 1 deg at 100 px/deg, over 1 deg at 40 px/deg.
    wide = [GazeSample(i * STEP_NS, 500.0 + (30.0 if i % 2 else -30.0), 500.0, True, PPD) for i in range(41)]
    assert len(detect_fixations(wide)[0]) == 1
    narrow_scale = [GazeSample(s.timestamp_ns, s.x, s.y, True, 40.0) for s in wide]
    assert detect_fixations(narrow_scale)[0] == []


def test_long_gap_splits_fixation() -> None:
    a = fixation(0, 500.0, 400.0, 200)
    blink = no_gaze(next_t(a), 200)
    b = fixation(next_t(blink), 500.0, 400.0, 200, seed=2)
    fixes, counters = detect_fixations(a + blink + b, image_size=SIZE)
    assert len(fixes) == 2
    assert counters["no_gaze"] == len(blink)
    assert counters["gap"] >= 1


def test_short_gap_is_bridged() -> None:
    a = fixation(0, 500.0, 400.0, 200)
    blip = no_gaze(next_t(a), 30)
    b = fixation(next_t(blip), 500.0, 400.0, 200, seed=2)
    fixes, counters = detect_fixations(a + blip + b, image_size=SIZE)
    assert len(fixes) == 1
    assert fixes[0].duration_ms == pytest.approx(200 + 35 + 200)
    assert counters["gap"] == 0 and counters["no_gaze"] == len(blip)


def test_nan_in_one_coordinate_is_no_gaze() -> None:
    stream = fixation(0, 500.0, 400.0, 200)
    stream[10] = GazeSample(stream[10].timestamp_ns, math.nan, 400.0, True, PPD)
    stream[11] = GazeSample(stream[11].timestamp_ns, 500.0, math.inf, True, PPD)
    fixes, counters = detect_fixations(stream, image_size=SIZE)
    assert len(fixes) == 1 and counters["no_gaze"] == 2


def test_samples_off_the_image_are_dropped() -> None:
    stream = fixation(0, 500.0, 400.0, 200)
    for i in (5, 6, 7):
        stream[i] = GazeSample(stream[i].timestamp_ns, -50.0, 400.0, True, PPD)
    stream[8] = GazeSample(stream[8].timestamp_ns, 500.0, 1500.0, True, PPD)  # y == height
    fixes, counters = detect_fixations(stream, image_size=SIZE)
    assert counters["off_image"] == 4
    assert len(fixes) == 1 and fixes[0].x == pytest.approx(500.0, abs=1.0)


def test_not_worn_samples_are_dropped() -> None:
    stream = fixation(0, 500.0, 400.0, 200)
    for i in range(10, 14):
        s = stream[i]
        stream[i] = GazeSample(s.timestamp_ns, 1900.0, 1400.0, False, PPD)  # far away, but not worn
    fixes, counters = detect_fixations(stream, image_size=SIZE)
    assert counters["not_worn"] == 4
    assert len(fixes) == 1 and fixes[0].x == pytest.approx(500.0, abs=1.0)


def test_backwards_timestamps_are_dropped_and_counted() -> None:
    stream = fixation(0, 500.0, 400.0, 300)
    bad = [GazeSample(stream[20].timestamp_ns - 50_000_000, 1800.0, 100.0, True, PPD),
           GazeSample(stream[20].timestamp_ns - 1, 1800.0, 100.0, True, PPD)]
    stream = stream[:21] + bad + stream[21:]
    fixes, counters = detect_fixations(stream, image_size=SIZE)
    assert counters["backwards"] == 2
    assert len(fixes) == 1 and fixes[0].duration_ms == pytest.approx(300.0)


def test_clock_jump_forward_closes_window_and_continues() -> None:
    a = fixation(0, 500.0, 400.0, 200)
    b = fixation(a[-1].timestamp_ns + 3600 * 10**9, 500.0, 400.0, 200)
    fixes, counters = detect_fixations(a + b, image_size=SIZE)
    assert counters["clock_jump"] == 1
    assert len(fixes) == 2 and all(f.duration_ms == pytest.approx(200.0) for f in fixes)


def test_clock_jump_backwards_starts_new_time_base() -> None:
    a = fixation(10**15, 500.0, 400.0, 200)
    b = fixation(10**12, 900.0, 700.0, 200)  # the clock was reset far into the past
    fixes, counters = detect_fixations(a + b, image_size=SIZE)
    assert counters["clock_jump"] == 1
    assert counters["backwards"] == 0  # not every later sample dropped
    assert len(fixes) == 2 and fixes[1].x == pytest.approx(900.0, abs=1.0)


def test_malformed_samples_never_raise() -> None:
    det = FixationDetector(image_size=SIZE)
    garbage = [GazeSample(None, 1.0, 1.0), GazeSample(0, "x", 1.0), object(),  # type: ignore[arg-type]
               GazeSample(math.nan, 1.0, 1.0)]  # type: ignore[arg-type]
    for g in garbage:
        assert det.feed(g) == []  # type: ignore[arg-type]
    assert det.counters["malformed"] == len(garbage)


def test_px_per_deg_fallbacks() -> None:
    stream = [GazeSample(s.timestamp_ns, s.x, s.y, True, math.nan) for s in fixation(0, 500.0, 400.0, 200)]
    assert detect_fixations(stream)[1]["no_scale"] == len(stream)
    fixes, counters = detect_fixations(stream, default_px_per_deg=PPD)
    assert len(fixes) == 1 and fixes[0].px_per_deg == PPD and counters["no_scale"] == 0
    negative = [GazeSample(s.timestamp_ns, s.x, s.y, True, -3.0) for s in stream]
    fixes, counters = detect_fixations(negative, default_px_per_deg=PPD)
    assert len(fixes) == 1 and counters["bad_px_per_deg"] == len(stream)


def test_zoom_change_ends_the_fixation() -> None:
    a = fixation(0, 500.0, 400.0, 200)
    b = fixation(next_t(a), 500.0, 400.0, 200, ppd=PPD / 2)
    fixes, counters = detect_fixations(a + b)
    assert counters["view_change"] == 1
    assert [f.px_per_deg for f in fixes] == [PPD, PPD / 2]


def test_noisy_px_per_deg_keeps_fixations_whole_and_a_zoom_step_still_ends_one() -> None:
    """A CSV's px_per_deg may be measured per sample (viewing distance) with a little noise:
    fixations survive it, while the reader's 20 % wheel zoom still starts a new window."""
    rng = np.random.default_rng(3)
    a = fixation(0, 500.0, 400.0, 300)
    b = fixation(next_t(a), 1200.0, 900.0, 300, seed=1)
    noisy = [GazeSample(s.timestamp_ns, s.x, s.y, True, PPD * (1.0 + rng.uniform(-0.04, 0.04))) for s in a + b]
    fixes, counters = detect_fixations(noisy, image_size=SIZE)
    assert len(fixes) == 2 and counters["view_change"] == 0
    assert [f.duration_ms for f in fixes] == pytest.approx([300.0, 300.0])
    zoomed = fixation(next_t(a), 500.0, 400.0, 200, ppd=PPD * 1.2)
    fixes, counters = detect_fixations(a + zoomed, image_size=SIZE)
    assert counters["view_change"] == 1 and len(fixes) == 2


def test_a_scale_measured_with_a_few_percent_of_noise_loses_no_fixation_time() -> None:
    """Per-sample px_per_deg noise of 4 % s.d. (a viewing distance measured sample by sample):
    one sample off the window's scale is dropped, not taken for a zoom. Against the window's
    first sample, with one sample enough, it lost 17 % of the fixation time."""
    rng = np.random.default_rng(5)
    clean: list[GazeSample] = []
    for k in range(12):
        clean += fixation(next_t(clean) if clean else 0, 300.0 + 120.0 * k, 400.0 + 80.0 * (k % 3), 400, seed=k)
    noisy = [GazeSample(s.timestamp_ns, s.x, s.y, True, PPD * (1.0 + rng.normal(0.0, 0.04))) for s in clean]
    want, _ = detect_fixations(clean, image_size=SIZE)
    got, counters = detect_fixations(noisy, image_size=SIZE)
    assert len(got) == len(want) == 12
    assert sum(f.duration_ms for f in got) >= 0.99 * sum(f.duration_ms for f in want)
    assert counters["view_change"] == 0 and counters["scale_outlier"] > 0
    # A zoom persists: it ends the window and costs one sample.
    a = fixation(0, 500.0, 400.0, 200)
    zoomed = fixation(next_t(a), 500.0, 400.0, 200, ppd=PPD * 1.2)
    fixes, counters = detect_fixations(a + zoomed, image_size=SIZE)
    assert counters["view_change"] == 1 and counters["scale_outlier"] == 1
    assert fixes[1].n_samples == len(zoomed) - 1


def test_too_short_window_is_not_a_fixation() -> None:
    fixes, counters = detect_fixations(fixation(0, 500.0, 400.0, 60))
    assert fixes == [] and counters["too_short"] == 1


def test_tick_ends_a_fixation_whose_stream_fell_silent() -> None:
    det = FixationDetector()
    assert det.feed_many(fixation(0, 500.0, 400.0, 200)) == []
    last = 200 * 1_000_000
    # A Wi-Fi stall of 200 ms is silence, not the end of the look: the delayed samples go on
    # with the same fixation (it used to be cut in two after 75 ms).
    assert det.tick(last + 200 * 1_000_000) == []
    assert det.feed_many(fixation(last + 5_000_000, 500.0, 400.0, 200, seed=1)) == []
    last = 405 * 1_000_000
    assert det.tick(last + 200 * 1_000_000) == []
    fixes = det.tick(last + 300 * 1_000_000)  # silent past quiet_ms: the source stopped
    assert len(fixes) == 1 and not det.pending
    assert fixes[0].duration_ms == pytest.approx(405.0)
    assert det.flush() == []


def test_no_gaze_samples_end_a_fixation_after_the_gap_without_a_tick() -> None:
    """The pointer page's lift sends no-gaze samples: the fixation ends at the gap, not the quiet time."""
    det = FixationDetector()
    det.feed_many(fixation(0, 500.0, 400.0, 200))
    assert det.feed(GazeSample(205 * 1_000_000, math.nan, math.nan, True, PPD)) == []
    fixes = det.feed(GazeSample(305 * 1_000_000, math.nan, math.nan, True, PPD))
    assert len(fixes) == 1 and fixes[0].duration_ms == pytest.approx(200.0)


def test_incremental_equals_batch_and_fuzz_never_raises() -> None:
    rng = np.random.default_rng(7)
    stream: list[GazeSample] = []
    t = 0
    for k in range(40):
        x, y = rng.uniform(-100, 2100), rng.uniform(-100, 1600)
        for s in fixation(t, x, y, float(rng.uniform(40, 500)), seed=k):
            r = rng.random()
            if r < 0.03:
                s = GazeSample(s.timestamp_ns, math.nan, s.y, True, PPD)
            elif r < 0.05:
                s = GazeSample(s.timestamp_ns, s.x, s.y, False, PPD)
            elif r < 0.06:
                s = GazeSample(s.timestamp_ns - int(rng.integers(1, 10**8)), s.x, s.y, True, PPD)
            elif r < 0.065:
                s = GazeSample(s.timestamp_ns + 5 * 10**9, s.x, s.y, True, PPD)
            stream.append(s)
        t = stream[-1].timestamp_ns + int(rng.integers(1, 40)) * STEP_NS
    batch, counters = detect_fixations(stream, image_size=SIZE)
    det = FixationDetector(FixationParams(), image_size=SIZE)
    live = []
    for s in stream:
        live += det.feed(s)
    live += det.flush()
    assert live == batch
    assert set(counters) == set(COUNTER_KEYS)
    dropped = sum(counters[k] for k in ("no_gaze", "not_worn", "off_image", "backwards", "malformed", "no_scale"))
    assert counters["accepted"] + dropped == len(stream)
    assert len(batch) > 10


def test_bad_params_raise() -> None:
    with pytest.raises(ValueError):
        FixationParams(dispersion_deg=0.0)
    with pytest.raises(ValueError):
        FixationParams(max_gap_ms=2000.0, clock_jump_ms=1000.0)
