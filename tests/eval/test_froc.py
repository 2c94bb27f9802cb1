"""FROC matching rule of DESIGN.md, CPM, pixel AUPR and Dice."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.eval.froc import (CPM_FP_RATES, GroundTruth, PixelCurve, dice, froc,
                                 ground_truth_from_mask, match_lesions)


def _truth(centres, radii) -> GroundTruth:
    return GroundTruth(np.asarray(centres, float).reshape(-1, 2), np.asarray(radii, float))


def test_ground_truth_uses_8_connected_components_and_equivalent_radius():
    mask = np.zeros((40, 40), np.uint8)
    mask[5:10, 5:10] = 255          # 25 px square
    mask[10, 10] = 255              # touches diagonally: same 8-connected component
    mask[30:32, 30:32] = 255        # a second MA, 4 px
    gt = ground_truth_from_mask(mask)
    assert len(gt) == 2
    order = np.argsort(gt.radii_px)
    assert gt.radii_px[order[0]] == pytest.approx(np.sqrt(4 / np.pi))
    assert gt.radii_px[order[1]] == pytest.approx(np.sqrt(26 / np.pi))
    assert gt.centers_xy[order[0]] == pytest.approx([30.5, 30.5])


def test_hit_within_r_plus_4_and_miss_beyond():
    gt = _truth([[100, 100]], [5.0])
    inside = match_lesions([[108.9, 100]], [1.0], gt)       # 8.9 <= 5 + 4
    outside = match_lesions([[109.2, 100]], [1.0], gt)      # 9.2 > 9
    assert inside.tolist() == [True]
    assert outside.tolist() == [False]


def test_second_hit_on_same_ma_is_false_positive():
    gt = _truth([[50, 50]], [3.0])
    hits = match_lesions([[50, 50], [51, 50]], [0.9, 0.8], gt)
    assert hits.tolist() == [True, False]


def test_lesions_are_matched_in_descending_score_order():
    gt = _truth([[50, 50]], [3.0])
    # The second lesion (higher score) takes the MA, the first becomes the false positive.
    hits = match_lesions([[50, 50], [52, 50]], [0.2, 0.9], gt)
    assert hits.tolist() == [False, True]


def test_lesion_takes_the_nearest_free_ma():
    gt = _truth([[50, 50], [58, 50]], [4.0, 4.0])
    hits = match_lesions([[56, 50], [50, 50]], [0.9, 0.8], gt)
    assert hits.tolist() == [True, True]


def test_froc_and_cpm_on_a_hand_computed_case():
    gt1 = _truth([[10, 10], [100, 100]], [2.0, 2.0])
    gt2 = _truth([[10, 10]], [2.0])
    per = [
        (np.array([[10, 10], [300, 300], [100, 100]]), np.array([0.9, 0.8, 0.1]), gt1),
        (np.array([[200, 200], [10, 10]]), np.array([0.7, 0.6]), gt2),
    ]
    res = froc(per)
    # Pooled order: hit(0.9) FP(0.8) FP(0.7) hit(0.6) hit(0.1); 3 MAs, 2 images.
    assert res.n_truth == 3 and res.n_images == 2
    assert res.sensitivity_at[0.125] == pytest.approx(1 / 3)
    assert res.sensitivity_at[0.5] == pytest.approx(1 / 3)
    assert res.sensitivity_at[1.0] == pytest.approx(1.0)
    expected = np.mean([1 / 3, 1 / 3, 1 / 3, 1.0, 1.0, 1.0, 1.0])
    assert res.cpm == pytest.approx(expected)
    assert set(res.sensitivity_at) == set(CPM_FP_RATES)


def test_tied_scores_are_kept_or_dropped_together():
    gt = _truth([[10, 10]], [2.0])
    per = [(np.array([[500, 500], [10, 10]]), np.array([0.5, 0.5]), gt)]
    res = froc(per, fp_rates=(0.5, 1.0))
    assert res.sensitivity_at[0.5] == 0.0   # cannot keep the hit without its tied FP
    assert res.sensitivity_at[1.0] == 1.0


def test_pixel_aupr_and_dice():
    truth = np.zeros((10, 10), bool)
    truth[2:4, 2:4] = True
    perfect = truth.astype(float)
    curve = PixelCurve()
    assert curve.add(perfect, truth) == pytest.approx(1.0)
    assert curve.aupr() == pytest.approx(1.0)
    assert curve.dice() == pytest.approx(1.0)
    bad = PixelCurve()
    bad.add(np.where(truth, 0.0, 1.0), truth)
    assert bad.aupr() < 0.1
    assert bad.dice() == 0.0
    assert dice(0, 0, 0) == 1.0
