"""Fixtures of the glance tests: the real committed model on a real fundus tile or two."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.config import load_config
from appliance.glance.modelfiles import load_model_files

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
