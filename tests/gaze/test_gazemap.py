"""Samples in, new ground out; live equals batch."""

from __future__ import annotations

import math

from appliance.config import load_config
from appliance.gaze.base import GazeSample
from appliance.gaze.gazemap import GazeMap
from appliance.gaze.geometry import default_image_px_per_deg
from appliance.gaze.simulated import simulate_reading


def test_live_stream_equals_batch() -> None:
    config = load_config(environ={})
    reading = simulate_reading(1600, 1200, seed=9)
    live = GazeMap.from_config(config, 1600, 1200)
    events = []
    for s in reading.samples:
        events += live.feed(s)
    events += live.flush()
    batch = GazeMap.from_config(config, 1600, 1200)
    batch_events = batch.feed_many(reading.samples) + batch.flush()
    assert events == batch_events and len(events) == len(live.fixations) > 10
    cells = [c for e in events for c in e.cells]
    assert len(cells) == len(set(cells)) and set(cells) == live.roi.covered_cells
    assert live.rois() and live.counters["fixations"] == len(events)


def test_default_scale_and_tick() -> None:
    config = load_config(environ={})
    gm = GazeMap.from_config(config, 1600, 1200)
    samples = [GazeSample(i * 5_000_000, 800.0, 600.0, True, math.nan) for i in range(41)]
    assert gm.feed_many(samples) == []
    events = gm.tick(samples[-1].timestamp_ns + 300_000_000)
    assert len(events) == 1 and not events[0].empty
    assert events[0].fixation.px_per_deg == default_image_px_per_deg(1600, 1200, config.display)


def test_a_px_per_deg_near_the_float_limit_does_not_stop_the_stream() -> None:
    """A gaze CSV whose px_per_deg column is absurdly large (a unit slip: 1e308) reached the heat
    map as an infinite reach and raised OverflowError, ending the stream; now its fixation
    simply covers the whole photograph."""
    config = load_config(environ={})
    gm = GazeMap.from_config(config, 640, 480)
    samples = [GazeSample(i * 5_000_000, 320.0, 240.0, True, 1e308) for i in range(41)]
    events = gm.feed_many(samples) + gm.flush()
    assert len(events) == 1
    assert set(events[0].cells) == {(r, c) for r in range(gm.roi.grid.rows) for c in range(gm.roi.grid.cols)}
