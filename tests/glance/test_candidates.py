"""Candidate extraction: positions, features, masks and gaze windows."""

from __future__ import annotations

import numpy as np

from appliance.glance.candidates import Candidate, detect

SYN_UM = 8.0  # µm per px of conftest.synthetic_fundus


def _nearest(cands, xy):
    d = [np.hypot(c.x - xy[0], c.y - xy[1]) for c in cands]
    i = int(np.argmin(d))
    return cands[i], d[i]


def test_synthetic_dot_is_found_with_physical_features(syn):
    rgb, fov, dot, _ = syn
    cands = detect(rgb, fov, SYN_UM)
    assert cands and all(isinstance(c, Candidate) for c in cands)
    best, dist = _nearest(cands, dot)
    assert dist < 2.0
    f = best.features
    assert 20.0 < f["diameter_um"] < 120.0
    assert f["elongation"] < 1.6
    assert f["contrast"] > 0.1
    assert best.patch is not None and best.patch.shape == (15, 15)
    assert best.mask is not None and best.mask.any()
    x0, y0 = best.mask_origin
    assert x0 <= dot[0] < x0 + best.mask.shape[1] and y0 <= dot[1] < y0 + best.mask.shape[0]


def test_dot_is_the_most_salient_candidate(syn):
    rgb, fov, dot, _ = syn
    cands = detect(rgb, fov, SYN_UM)
    top = max(cands, key=lambda c: c.saliency)
    assert np.hypot(top.x - dot[0], top.y - dot[1]) < 2.0


def test_window_candidates_equal_whole_image_candidates(syn):
    rgb, fov, dot, _ = syn
    whole = detect(rgb, fov, SYN_UM)
    win = (150, 180, 260, 290)
    part = detect(rgb, fov, SYN_UM, window=win)
    inside = sorted((round(c.x, 3), round(c.y, 3)) for c in whole
                    if win[0] <= c.x < win[2] and win[1] <= c.y < win[3])
    got = sorted((round(c.x, 3), round(c.y, 3)) for c in part)
    assert got == inside
    a = _nearest(part, dot)[0].features
    b = _nearest(whole, dot)[0].features
    for k in ("contrast", "z", "diameter_um", "ray_min", "vessel"):
        assert abs(a[k] - b[k]) < 1e-5 * max(1.0, abs(b[k])), k


def test_real_crop_both_microaneurysms_are_candidates(real_crop):
    rgb, fov, mas = real_crop
    cands = detect(rgb, fov, 10.0)
    for xy in mas:
        assert _nearest(cands, xy)[1] < 3.0
