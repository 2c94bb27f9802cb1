"""The reader's live adapter over the real glance pipeline, on a real IDRiD photograph."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from appliance.gaze.base import GazeSample
from appliance.glance.engine import GlanceEngine
from appliance.imaging.io import load_photograph
from appliance.ui.engine_live import EngineLiveGlance


def test_fixations_on_real_mas_yield_lesions_there(config, idrid_dir):
    photo = load_photograph(idrid_dir / "images" / "IDRiD_13.jpg", config.imaging)
    mask = cv2.imread(str(idrid_dir / "masks" / "IDRiD_13_MA.png"), cv2.IMREAD_GRAYSCALE)
    n, _, stats, cents = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    mas = [(float(cents[i][0]), float(cents[i][1]), math.sqrt(stats[i, cv2.CC_STAT_AREA] / math.pi))
           for i in range(1, n)][:6]
    glance = EngineLiveGlance(GlanceEngine(config, predictor=None), photo, px_per_deg=60.0)
    t, events = 0, []
    rng = np.random.default_rng(0)
    for x, y, _ in mas:
        for _ in range(60):  # 300 ms at 200 Hz
            events += glance.push(GazeSample(t, x + rng.normal(0, 3), y + rng.normal(0, 3), True, 60.0))
            t += 5_000_000
        for _ in range(20):  # a blink ends the fixation
            events += glance.push(GazeSample(t, math.nan, math.nan, True, 60.0))
            t += 5_000_000
    events += glance.flush()
    glance.close()
    assert events, "no lesion event after six fixations on real microaneurysms"
    assert all(e.fixation_wall_ns > 0 for e in events)
    hits = [(x, y) for x, y, r in mas if any(math.hypot(e.lesion.x - x, e.lesion.y - y) <= r + 4 for e in events)]
    assert hits, "no lesion event lies on a fixated microaneurysm"
    assert glance.prompt(mas[0][0], mas[0][1]) is None  # no model: nothing to prompt


def test_a_slow_replay_keeps_the_recordings_fixations(config):
    """The reader's replay at a quarter speed: the session's ticker advanced the stream's clock
    by the wall time waited, so each 33 ms step of a 30 Hz recording (133 ms of wall time)
    looked like a gap and every fixation was cut short (none at all). It advances by stream
    time now, and the replay finds the fixations a batch run finds."""
    from appliance.gaze.fixations import detect_fixations
    from appliance.imaging.io import Photograph
    from appliance.ui.live import LiveSession

    rgb = np.full((256, 256, 3), (150, 80, 30), np.uint8)
    glance = EngineLiveGlance(GlanceEngine(config, predictor=None), Photograph(rgb, "flat", "flat-sha"),
                              px_per_deg=60.0, preencode=False)
    step_ns = 33_333_333
    samples = [GazeSample(i * step_ns, 80.0 + (i % 2), 90.0, True, 60.0) for i in range(11)]
    samples += [GazeSample((11 + i) * step_ns, 180.0, 170.0 + (i % 2), True, 60.0) for i in range(11)]
    expected, _ = detect_fixations(samples, default_px_per_deg=60.0, image_size=(256, 256))
    assert len(expected) == 2
    session = LiveSession(1, glance, lambda image_id, lesion: None, threshold=1.0)
    try:
        session.start_replay(samples, speed=0.25)
        session.replay_thread.join(timeout=30)
        assert glance.pipeline.gaze_map.counters["fixations"] == len(expected)
        assert [(f.start_ns, f.end_ns) for f in glance.pipeline.gaze_map.fixations] == \
            [(f.start_ns, f.end_ns) for f in expected]
    finally:
        session.close()


def test_a_network_stall_in_a_live_stream_does_not_cut_the_fixation(config):
    """The Neon's samples reach the station over Wi-Fi, which stalls for 100-200 ms now and then.
    The session's ticker ended the open fixation after 75 ms of silence, so one long look at an
    MA became two shorter ones (or too short to count); it now waits for the quiet time."""
    import time

    from appliance.imaging.io import Photograph
    from appliance.ui.live import LiveSession

    rgb = np.full((256, 256, 3), (150, 80, 30), np.uint8)
    glance = EngineLiveGlance(GlanceEngine(config, predictor=None), Photograph(rgb, "flat", "flat-sha"),
                              px_per_deg=60.0, preencode=False)
    session = LiveSession(1, glance, lambda image_id, lesion: None, threshold=1.0)
    try:
        t = 0
        for burst in range(2):  # 300 ms of samples, a 150 ms stall, 300 ms more of the same look
            for i in range(60):
                session.push(GazeSample(t, 100.0 + (i % 2), 120.0, True, 60.0))
                t += 5_000_000
                time.sleep(0.005)
            if burst == 0:
                time.sleep(0.15)
        time.sleep(0.6)  # then the stream falls silent: the fixation ends
        fixations = glance.pipeline.gaze_map.fixations
        assert len(fixations) == 1
        assert fixations[0].duration_ms == pytest.approx(595.0)
    finally:
        session.close()
