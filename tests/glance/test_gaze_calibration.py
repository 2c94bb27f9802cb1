"""Implicit calibration: a constant tracker offset is found from the dwells, and nothing else is."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.gaze.fixations import Fixation
from appliance.glance.gaze_calibration import CalibrationParams, GazeCalibration, calibrate
from appliance.glance.gaze_scoring import GazeScoringParams, dwell_weights, gaze_evidence, rescore
from appliance.glance.lesions import Lesion

PPD = 100.0  # image px per degree
AREA = 4000.0 * 3000.0


def _fix(index: int, x: float, y: float, ms: float) -> Fixation:
    return Fixation(index, 0, int(ms * 1e6), x, y, PPD, int(ms / 5) + 1, 0.1)


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40 MA-like candidates (score 0.6) among 400 weaker ones (0.3) on a 4000 x 3000 image.

    Returns the candidate centres, their scores and the indices of the MA-like ones.
    """
    rng = np.random.default_rng(seed)
    xy = rng.uniform((200, 200), (3800, 2800), size=(440, 2))
    scores = np.full(440, 0.3)
    scores[:40] = 0.6
    return xy, scores, np.arange(40)


def _reading(xy: np.ndarray, targets: np.ndarray, offset_deg: tuple[float, float], error_deg: float,
             seed: int = 1) -> list[Fixation]:
    """Search fixations anywhere plus one 700 ms dwell on each target, seen through the tracker."""
    rng = np.random.default_rng(seed)
    out = [_fix(i, *rng.uniform((200, 200), (3800, 2800)), 250.0) for i in range(40)]
    for k, t in enumerate(targets):
        err = rng.normal(0.0, error_deg / np.sqrt(np.pi / 2), 2)
        x, y = xy[t] + (np.asarray(offset_deg) + err) * PPD
        out.append(_fix(40 + k, x, y, 700.0))
    return out


def _fit(xy, scores, fixations, **kw):
    w = dwell_weights(np.array([f.duration_ms for f in fixations]))
    return calibrate(xy, scores, fixations, w, AREA, 1.5, CalibrationParams(**kw))


def test_a_constant_offset_is_recovered_from_the_dwells():
    xy, scores, mas = _scene()
    fixations = _reading(xy, mas[:15], offset_deg=(1.0, -0.6), error_deg=0.2)
    cal = _fit(xy, scores, fixations)
    assert cal is not None
    assert cal.offset_deg == pytest.approx((1.0, -0.6), abs=0.1)
    assert cal.error_deg < 1.5 and cal.gain >= 6.0
    # Taking the offset out puts a dwell back on its target.
    x, y = cal.shift(fixations[40])
    assert np.hypot(x - xy[mas[0], 0], y - xy[mas[0], 1]) < 0.5 * PPD


def test_the_offset_moves_the_evidence_onto_the_dwelt_candidates():
    xy, scores, mas = _scene()
    fixations = _reading(xy, mas[:15], offset_deg=(1.0, -0.6), error_deg=0.2)
    cal = _fit(xy, scores, fixations)
    plain = gaze_evidence(xy, scores, fixations, GazeScoringParams())
    fitted = gaze_evidence(xy, scores, fixations, GazeScoringParams(), cal)
    dwelt = np.zeros(len(xy), bool)
    dwelt[mas[:15]] = True
    # Ranked by evidence, the 15 dwelt candidates come first once the offset is out.
    assert set(np.argsort(-fitted)[:15]) == set(mas[:15])
    assert len(set(np.argsort(-plain)[:15]) & set(mas[:15])) < 15
    assert fitted[dwelt].mean() > 1.5 * plain[dwelt].mean()


def test_independent_errors_without_an_offset_are_left_alone():
    xy, scores, mas = _scene()
    fixations = _reading(xy, mas[:15], offset_deg=(0.0, 0.0), error_deg=1.5)
    assert _fit(xy, scores, fixations) is None


def test_too_few_dwells_to_tell():
    xy, scores, mas = _scene()
    assert _fit(xy, scores, _reading(xy, mas[:2], offset_deg=(1.0, -0.6), error_deg=0.2)) is None
    # No dwell at all, no candidates, or a configured error already below every residual.
    assert _fit(xy, scores, _reading(xy, mas[:0], offset_deg=(1.0, -0.6), error_deg=0.2)) is None
    assert _fit(np.zeros((0, 2)), np.zeros(0), _reading(xy, mas[:15], (1.0, -0.6), 0.2)) is None
    w = np.ones(3)
    assert calibrate(xy, scores, _reading(xy, mas[:3], (1.0, -0.6), 0.2)[:3], w, AREA, 0.3) is None


def test_rescore_with_the_field_of_view_reports_the_calibration_it_used():
    xy, scores, mas = _scene()
    fixations = _reading(xy, mas[:15], offset_deg=(-0.8, 0.9), error_deg=0.2)
    lesions = [Lesion(i, float(x), float(y), 20, (int(x) - 3, int(y) - 3, int(x) + 3, int(y) + 3), float(s), "saliency")
               for i, ((x, y), s) in enumerate(zip(xy, scores))]
    out, cal = rescore(lesions, fixations, GazeScoringParams(), fov_area_px=AREA)
    assert isinstance(cal, GazeCalibration)
    assert cal.offset_deg == pytest.approx((-0.8, 0.9), abs=0.1)
    assert {l.id for l in out[:15]} == set(mas[:15].tolist())
    _, none = rescore(lesions, fixations, GazeScoringParams())
    assert none is None


def test_parameters_are_checked():
    with pytest.raises(ValueError):
        CalibrationParams(errors_deg=())
    with pytest.raises(ValueError):
        CalibrationParams(hit_prob=1.0)
    with pytest.raises(ValueError):
        CalibrationParams(max_offset_deg=0.0)


def test_lesions_json_records_the_calibration_only_when_one_was_used():
    import json
    from dataclasses import asdict

    from appliance.glance.lesions import SegmentationResult
    from appliance.glance.outputs import lesions_document

    result = SegmentationResult(100, 100, "gaze", [], 0.5, "litemedsam", "0" * 64)
    assert "gaze_calibration" not in lesions_document(result, "x.png")
    result.gaze_calibration = asdict(GazeCalibration((1.0, -0.6), 0.35, 12.5, 18))
    doc = json.loads(json.dumps(lesions_document(result, "x.png")))
    assert doc["gaze_calibration"] == {"offset_deg": [1.0, -0.6], "error_deg": 0.35, "gain": 12.5, "fixations": 18}
