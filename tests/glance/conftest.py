"""Fixtures of the glance tests: the real committed model on a real fundus tile or two, and
synthetic / small real crops for the saliency, candidate and DKF tests."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage

from appliance.config import load_config
from appliance.glance.modelfiles import load_model_files
from appliance.imaging.fov import FieldOfView

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def int8_runtime():
    """The committed int8 LiteMedSAM on onnxruntime's CPU provider (one per test module)."""
    from appliance.glance.runtime.factory import build_runtime

    config = load_config(environ={}).replace(model={"dir": str(REPO_MODELS), "variant": "int8", "providers": "cpu"})
    return build_runtime(config, load_model_files(REPO_MODELS))


@pytest.fixture(scope="module")
def idrid_photo(idrid_dir):
    """IDRiD_09 as RGB uint8 and the centres + bounding boxes (image px) of its annotated MAs."""
    rgb = cv2.cvtColor(cv2.imread(str(idrid_dir / "images" / "IDRiD_09.jpg")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(idrid_dir / "masks" / "IDRiD_09_MA.png"), cv2.IMREAD_GRAYSCALE) > 0
    n, _, stats, cents = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = np.array([[x - 4, y - 4, x + w + 4, y + h + 4] for x, y, w, h in stats[1:, :4]], np.float64)
    return rgb, mask, cents[1:], boxes


#: µm per px of the synthetic images (working factor 1, so sizes are easy to reason about).
SYN_UM = 8.0


def synthetic_fundus(seed: int = 0, size: int = 320):
    """An orange disc with speckle, one vessel line and one MA-like dark dot.

    Returns the RGB image, its FOV, the dot's (x, y) and the vessel's endpoints.
    """
    rng = np.random.default_rng(seed)
    g = np.full((size, size), 120.0, np.float32) + rng.normal(0, 2.0, (size, size)).astype(np.float32)
    vessel = ((20, 60), (300, 120))
    cv2.line(g, vessel[0], vessel[1], 80.0, 6)
    dot = (200.0, 230.0)
    yy, xx = np.mgrid[:size, :size]
    g -= 40.0 * np.exp(-((xx - dot[0]) ** 2 + (yy - dot[1]) ** 2) / (2 * 3.0 ** 2))
    g = cv2.GaussianBlur(g, (0, 0), 0.7)
    rgb = np.dstack([np.clip(g * 1.5, 0, 255), np.clip(g, 0, 255), np.clip(g * 0.3, 0, 255)]).astype(np.uint8)
    mask = np.ones((size, size), bool)
    fov = FieldOfView(mask, (size / 2, size / 2), size, 2.0 * size)
    return rgb, fov, dot, vessel


@pytest.fixture
def syn():
    return synthetic_fundus()


@pytest.fixture
def real_crop():
    """skimage's CC0 fundus crop (102×102 grey) with two MAs, as RGB; about 10 µm/px."""
    path = os.path.join(os.path.dirname(skimage.__file__), "data", "microaneurysms.png")
    g = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    rgb = np.dstack([np.clip(g * 1.5, 0, 255).astype(np.uint8), g, (g * 0.4).astype(np.uint8)])
    fov = FieldOfView(np.ones(g.shape, bool), (51.0, 51.0), 200.0, 400.0)
    return rgb, fov, [(16.0, 23.0), (49.0, 71.0)]
