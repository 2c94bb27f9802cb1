"""Tests for the U-Net experiment's input, tiled inference and peak finding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.eval.manet import CANONICAL_UM_PER_PX, OUTSIDE, MaNet, contrast_input, find_peaks

onnx = pytest.importorskip("onnx")


def _retina(h: int = 700, w: int = 900) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 180, 90, 40
    rgb = np.clip(rgb + rng.normal(0, 2, rgb.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    fov = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.48 * min(h, w)) ** 2 * 1.6
    rgb[~fov] = 0
    return rgb, fov


def test_contrast_input_marks_a_dark_dot_and_blanks_the_margin():
    rgb, fov = _retina()
    yy, xx = np.mgrid[:rgb.shape[0], :rgb.shape[1]]
    dot = (yy - 350) ** 2 + (xx - 450) ** 2 <= 16
    rgb[dot, 1] = 60  # a green-dark MA-sized dot
    x = contrast_input(rgb, fov)
    assert x.shape == (3, *rgb.shape[:2]) and x.dtype == np.float32
    assert x[1, 350, 450] < -2.0  # 33 % darker than the background, times the gain
    assert abs(float(np.median(x[1][fov]))) < 0.2  # flat retina reads ~0
    assert (x[:, ~fov] == 0).all()
    with pytest.raises(ValueError):
        contrast_input(rgb[..., 0], fov)


def _tiny_net(path: Path) -> Path:
    """A 5×5 convolution, 3 channels → 1: a stand-in with a known receptive field."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(1).normal(0, 0.2, (1, 3, 5, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["contrast", "w"], ["logit"], pads=[2, 2, 2, 2])], "tiny",
        [helper.make_tensor_value_info("contrast", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text("{}")
    return path


def test_a_window_gets_the_values_of_the_whole_image_pass(tmp_path):
    net = MaNet(_tiny_net(tmp_path / "tiny.onnx"), threads=1)
    rgb, fov = _retina()
    whole = net.logits(rgb, fov, CANONICAL_UM_PER_PX)
    assert whole.shape == rgb.shape[:2]
    assert (whole[~fov] == OUTSIDE).all()
    x0, y0, x1, y1 = 300, 250, 520, 430  # straddles the 384-px tile boundary
    part = net.logits(rgb, fov, CANONICAL_UM_PER_PX, window=(x0, y0, x1, y1))
    np.testing.assert_allclose(part, whole[y0:y1, x0:x1], atol=1e-4)
    # Another scale is resampled to the canonical one and back to the window's size.
    other = net.logits(rgb, fov, CANONICAL_UM_PER_PX * 1.3, window=(x0, y0, x1, y1))
    assert other.shape == (y1 - y0, x1 - x0) and np.isfinite(other).all()


def test_peaks_are_one_per_bump_at_its_centre():
    yy, xx = np.mgrid[:200, :300].astype(np.float32)
    logit = np.full((200, 300), -8.0, np.float32)
    for cx, cy, a in ((80.3, 60.0, 6.0), (220.0, 140.6, 3.0)):
        logit += (a + 8.0) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 3.0 ** 2))
    logit[100:110, 20:30] = 1.0  # a flat top: one peak, not a hundred
    peaks = sorted(find_peaks(logit, um_per_px=4.25), key=lambda p: -p.probability)
    assert len(peaks) == 3
    assert abs(peaks[0].x - 80.3) < 0.5 and abs(peaks[0].y - 60.0) < 0.5
    assert peaks[0].probability > peaks[-1].probability
