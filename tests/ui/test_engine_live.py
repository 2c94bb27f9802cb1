"""The reader's live adapter over the real glance pipeline, on a real IDRiD photograph."""

from __future__ import annotations

import math

import cv2
import numpy as np

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
