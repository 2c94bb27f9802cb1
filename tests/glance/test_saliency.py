"""Saliency map: dots light up, vessels do not, windows equal the whole image."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.glance.saliency import SaliencyParams, compute_saliency, margin_px, work_factor

SYN_UM = 8.0  # µm per px of conftest.synthetic_fundus


def test_dot_is_salient_and_vessel_is_suppressed(syn):
    rgb, fov, dot, vessel = syn
    smap = compute_saliency(rgb, fov.mask, SYN_UM)
    sal = smap.maps["saliency"]
    u, v = smap.to_work(*dot)
    at_dot = sal[int(round(v)), int(round(u))]
    # Middle of the vessel line, away from its ends.
    (x0, y0), (x1, y1) = vessel
    on_vessel = max(sal[int(round(y0 + t * (y1 - y0))), int(round(x0 + t * (x1 - x0)))]
                    for t in np.linspace(0.3, 0.7, 20))
    assert at_dot > 0.1
    assert on_vessel < 0.2 * at_dot
    assert smap.maps["vessel"][int(round((y0 + y1) / 2)), int(round((x0 + x1) / 2))] > 0.1


def test_window_equals_whole_image_inside(syn):
    rgb, fov, dot, _ = syn
    params = SaliencyParams(line_um=100.0, background_um=200.0, noise_um=60.0, fill_um=100.0,
                            vessel_um=150.0)
    whole = compute_saliency(rgb, fov.mask, SYN_UM, params=params)
    win = (150, 180, 250, 280)
    part = compute_saliency(rgb, fov.mask, SYN_UM, window=win, params=params)
    assert part.window == win
    assert part.maps["saliency"].shape[0] < whole.maps["saliency"].shape[0] or part.x0 > 0
    for name in ("saliency", "tophat", "noise", "vessel", "texture"):
        a = part.maps[name]
        u0, v0 = (win[0] - part.x0) // part.factor, (win[1] - part.y0) // part.factor
        u1, v1 = (win[2] - part.x0) // part.factor, (win[3] - part.y0) // part.factor
        b = whole.maps[name][v0 + part.y0 // part.factor:v1 + part.y0 // part.factor,
                             u0 + part.x0 // part.factor:u1 + part.x0 // part.factor]
        np.testing.assert_allclose(a[v0:v1, u0:u1], b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_work_factor_follows_pixel_scale():
    assert work_factor(4.25) == 2      # IDRiD: ~8.5 µm working pixels
    assert work_factor(8.0) == 1
    assert work_factor(2.0) == 4
    assert margin_px(4.25) > margin_px(8.0) / 2
    with pytest.raises(ValueError):
        work_factor(0.0)


def test_rejects_bad_inputs(syn):
    rgb, fov, _, _ = syn
    with pytest.raises(ValueError):
        compute_saliency(rgb[:, :, 0], fov.mask, SYN_UM)
    with pytest.raises(ValueError):
        compute_saliency(rgb, fov.mask[:10], SYN_UM)
    with pytest.raises(ValueError):
        compute_saliency(rgb, fov.mask, SYN_UM, window=(400, 400, 500, 500))


@pytest.mark.parametrize("shape, f", [((64, 96), 2), ((65, 97), 2), ((100, 301), 3), ((5, 2), 4), ((1, 1), 2)])
def test_block_mean_is_the_mean_of_each_block_including_partial_ones(shape, f):
    from appliance.glance.saliency import _block_mean

    a = np.random.default_rng(sum(shape)).integers(0, 256, shape).astype(np.uint8)
    got = _block_mean(a, f)
    H, W = -(-shape[0] // f), -(-shape[1] // f)
    assert got.shape == (H, W) and got.dtype == np.float32
    want = np.array([[a[i * f:(i + 1) * f, j * f:(j + 1) * f].mean() for j in range(W)] for i in range(H)])
    assert np.allclose(got, want, rtol=0, atol=1e-4)
