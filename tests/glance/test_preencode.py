"""Background pre-encoding: every FOV tile encoded, the prompted ones first, yielding while busy."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from appliance.glance.engine import GlanceEngine
from appliance.glance.preencode import Busy, PreEncoder, tile_order
from appliance.imaging.io import Photograph

DEMO = Path(__file__).resolve().parents[2] / "appliance" / "demo" / "IDRiD_03.jpg"


def _crop() -> Photograph:
    rgb = cv2.cvtColor(cv2.imread(str(DEMO)), cv2.COLOR_BGR2RGB)[1000:1512, 1250:1762]
    return Photograph(np.ascontiguousarray(rgb), "crop", "preencode-crop")


def test_tiles_are_ordered_by_candidates_and_all_encoded(config) -> None:
    engine = GlanceEngine.from_config(config)
    session = engine.open(_crop())
    order = tile_order(session).tiles
    grid = engine.predictor.grid(session.photo.rgb)
    assert {t.key for t in order} == {t.key for t in grid}  # the crop is all FOV
    pre = PreEncoder(session).start()
    pre.join(timeout_s=300)
    assert pre.done and pre.total == len(order) and pre.encoded == len(order)
    assert all(engine.predictor.is_cached(session.photo.sha256, t) for t in order)


def test_candidates_counted_in_bands_give_the_order_of_one_window(config, monkeypatch) -> None:
    from appliance.glance import engine

    session = GlanceEngine.from_config(config).open(_crop())
    monkeypatch.setattr(engine, "BAND_ROWS", 10_000)
    whole = tile_order(session)
    monkeypatch.setattr(engine, "BAND_ROWS", 1)  # eight 64-px bands over the 512-px crop
    assert tile_order(session) == whole


def test_encoder_waits_while_any_foreground_work_runs(config) -> None:
    """A fixation's ground finishing must not release the encoder while its refinement runs."""
    engine = GlanceEngine.from_config(config)
    session = engine.open(_crop())
    busy = Busy()
    pre = PreEncoder(session, busy=busy)
    with busy:  # the model thread: a refinement
        with busy:  # the gaze thread: a fixation's ground
            pre.start()
            time.sleep(3.0)  # tile_order has run by now; nothing may be encoded while busy
            assert pre.encoded == 0 and busy.is_set()
        time.sleep(1.0)  # the fixation is done, its refinement is not
        assert pre.encoded == 0 and not pre.done and busy.is_set()
    assert not busy.is_set()
    pre.join(timeout_s=300)
    assert pre.encoded == pre.total > 0


def test_encoding_stops_at_what_the_cache_keeps(config) -> None:
    from appliance.glance.predictor import SamPredictor

    full = GlanceEngine.from_config(config)
    engine = GlanceEngine(config, SamPredictor(full.predictor.runtime, cache_tiles=2))
    session = engine.open(_crop())
    order = tile_order(session).tiles
    assert len(order) > 2
    pre = PreEncoder(session).start()
    pre.join(timeout_s=300)
    # The two most promising tiles, kept; encoding on would have evicted them for worse ones.
    assert pre.total == pre.encoded == 2 and engine.predictor.stats.evicted == 0
    assert all(engine.predictor.is_cached(session.photo.sha256, t) for t in order[:2])


def test_the_tiles_the_model_will_be_prompted_on_come_first(config) -> None:
    """Exactly the tiles a scan prompts (candidates reaching prompt_min_score) lead the order."""
    engine = GlanceEngine.from_config(config)
    session = engine.open(_crop())
    plan = tile_order(session)
    grid = engine.predictor.grid(session.photo.rgb)
    result = session.scan(use_model=False)
    prompted = {grid.best_tile(l.x, l.y).key for l in result.lesions if l.score >= config.glance.prompt_min_score}
    assert 0 < plan.prompted < len(plan.tiles)  # the crop has both kinds: the test can fail
    assert {t.key for t in plan.tiles[:plan.prompted]} == prompted
    pre = PreEncoder(session).start()
    pre.join(timeout_s=300)
    assert pre.prompted == plan.prompted and 0 < pre.prompted_seconds <= pre.seconds
