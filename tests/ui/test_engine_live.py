"""The reader's live adapter over the appliance's own glance parts, on a real IDRiD photograph.

Skipped while ``appliance.glance.engine`` is not importable (it is being written beside the UI).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from appliance.gaze.base import GazeSample


def test_fixations_on_real_mas_yield_lesions_there(config, idrid_dir):
    try:
        from appliance.ui.engine_live import EngineLiveGlance, shared_engine

        shared_engine  # noqa: B018 - imported to check the engine module imports
        import appliance.glance.engine  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the glance engine is not importable yet: {exc}")
    config = config.replace(glance={"use_model": False})
    rgb = cv2.cvtColor(cv2.imread(str(idrid_dir / "images" / "IDRiD_13.jpg")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(idrid_dir / "masks" / "IDRiD_13_MA.png"), cv2.IMREAD_GRAYSCALE)
    n, _, stats, cents = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    mas = [(float(cents[i][0]), float(cents[i][1]), math.sqrt(stats[i, cv2.CC_STAT_AREA] / math.pi))
           for i in range(1, n)][:6]
    glance = EngineLiveGlance(rgb, config, image_px_per_deg=60.0)
    t, events = 0, []
    rng = np.random.default_rng(0)
    for x, y, _ in mas:
        for _ in range(60):  # 300 ms at 200 Hz
            events += glance.push(GazeSample(t, x + rng.normal(0, 3), y + rng.normal(0, 3), True, 60.0))
            t += 5_000_000
        for _ in range(20):  # a saccade far away ends the fixation
            events += glance.push(GazeSample(t, math.nan, math.nan, True, 60.0))
            t += 5_000_000
    assert events, "no lesion event after six fixations on real microaneurysms"
    hits = [(x, y) for x, y, r in mas if any(math.hypot(e.lesion.x - x, e.lesion.y - y) <= r + 4 for e in events)]
    assert hits, "no lesion event lies on a fixated microaneurysm"
