"""Gaze-weighted scores: dwells lift the candidate they were aimed at, and only that one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.gaze.fixations import Fixation
from appliance.glance.gaze_scoring import GazeScoringParams, dwell_weights, gaze_evidence, rescore
from appliance.glance.lesions import Lesion

PPD = 100.0  # image px per degree: 1.5° of tracker error is 150 px


def _fix(index: int, x: float, y: float, ms: float, ppd: float = PPD) -> Fixation:
    return Fixation(index, 0, int(ms * 1e6), x, y, ppd, int(ms / 5) + 1, 0.1)


def _search(n: int = 20, ms: float = 250.0) -> list[Fixation]:
    """Search fixations far from every candidate of these tests, to set the median duration."""
    return [_fix(i, 5000.0 + 1000.0 * i, 5000.0, ms) for i in range(n)]


def _lesion(i: int, x: float, y: float, score: float) -> Lesion:
    return Lesion(i, x, y, 20, (int(x) - 3, int(y) - 3, int(x) + 3, int(y) + 3), score, "saliency")


def test_dwell_weight_is_relative_to_the_readings_median():
    w = dwell_weights(np.array([250.0] * 9 + [600.0]))
    assert w[-1] > 0.9 and w[0] < 0.35  # a median fixation counts a third of a dwell
    # A slower reader (every fixation twice as long) gets the same weights.
    assert np.allclose(dwell_weights(np.array([500.0] * 9 + [1200.0])), w)
    assert dwell_weights(np.zeros(0)).size == 0


def test_a_dwell_lifts_the_candidate_it_was_aimed_at_and_not_one_merely_passed():
    xy = np.array([[1000.0, 1000.0], [3000.0, 1000.0]])
    scores = np.array([0.4, 0.4])
    fixations = _search() + [_fix(20, 1040.0, 980.0, 700.0), _fix(21, 3030.0, 1010.0, 250.0)]
    ev = gaze_evidence(xy, scores, fixations)
    assert ev[0] > 0.5
    assert ev[1] < 0.4 * ev[0]


def test_the_more_ma_like_of_two_neighbours_takes_most_of_a_dwell():
    xy = np.array([[1000.0, 1000.0], [1060.0, 1000.0], [1900.0, 1000.0]])
    scores = np.array([0.9, 0.2, 0.9])
    fixations = _search() + [_fix(20, 1030.0, 1000.0, 800.0)]
    ev = gaze_evidence(xy, scores, fixations)
    assert ev[0] > 3 * ev[1]
    assert ev[2] < 1e-3  # 870 px, about 9 sigma away: no share of this dwell


def test_tracker_error_scales_with_px_per_degree():
    """The same angular offset gives the same evidence at any zoom."""
    fixations_near = _search() + [_fix(20, 1100.0, 1000.0, 700.0, ppd=PPD)]
    fixations_zoomed = [_fix(i, 5000.0 + 1000.0 * i, 5000.0, 250.0, ppd=2 * PPD) for i in range(20)] + \
        [_fix(20, 1200.0, 1000.0, 700.0, ppd=2 * PPD)]
    a = gaze_evidence(np.array([[1000.0, 1000.0]]), np.array([0.5]), fixations_near)
    b = gaze_evidence(np.array([[1000.0, 1000.0]]), np.array([0.5]), fixations_zoomed)
    assert a[0] == pytest.approx(b[0], rel=1e-9) and a[0] > 0.1


def test_fixations_without_a_scale_and_empty_inputs_give_no_evidence():
    xy = np.array([[10.0, 10.0]])
    assert gaze_evidence(xy, np.array([0.9]), [_fix(0, 10.0, 10.0, 900.0, ppd=math.nan)]).tolist() == [0.0]
    assert gaze_evidence(xy, np.array([0.9]), []).tolist() == [0.0]
    assert gaze_evidence(np.zeros((0, 2)), np.zeros(0), _search()).size == 0


def test_rescore_keeps_the_detector_score_and_sorts_best_first():
    lesions = [_lesion(1, 1000.0, 1000.0, 0.3), _lesion(2, 3000.0, 1000.0, 0.8)]
    fixations = _search() + [_fix(20, 1020.0, 1010.0, 900.0)]
    out, calibration = rescore(lesions, fixations)
    assert calibration is None  # no field-of-view area given: no offset fit
    assert [l.id for l in out] == [1, 2]  # the dwelt one first, despite the lower detector score
    assert out[0].features["detector_score"] == pytest.approx(0.3)
    assert 0.0 <= out[1].score <= out[0].score <= 1.0
    assert out[0].score == pytest.approx(math.sqrt(0.3) * out[0].features["gaze_evidence"])
    assert lesions[0].score == 0.3  # the inputs are not modified
    assert rescore([], fixations) == ([], None)


def test_parameters_are_checked():
    with pytest.raises(ValueError):
        GazeScoringParams(tracker_error_deg=0.0)
