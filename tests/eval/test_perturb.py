"""Perturbed copies of a data set: each kind changes the photograph as it says and keeps the masks aligned."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.eval.dataset import load_dataset
from appliance.eval.froc import ground_truth_from_mask
from appliance.eval.perturb import KINDS, main, perturb_dataset
from appliance.imaging.fov import find_fov


@pytest.fixture(scope="module")
def fundus_dataset(tmp_path_factory) -> Path:
    """One synthetic fundus photograph (aperture, dark dots) and its MA mask, indexed like idrid-ma."""
    root = tmp_path_factory.mktemp("fundus")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    h, w = 480, 560
    yy, xx = np.mgrid[:h, :w]
    inside = (xx - 280) ** 2 + (yy - 240) ** 2 <= 230 ** 2
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[inside] = (190, 95, 40)
    mask = np.zeros((h, w), np.uint8)
    for x, y in ((200, 200), (330, 180), (260, 320), (360, 300)):
        dot = (xx - x) ** 2 + (yy - y) ** 2 <= 5 ** 2
        rgb[dot] = (120, 45, 25)
        mask[dot] = 255
    cv2.imwrite(str(root / "images/F_01.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "masks/F_01_MA.png"), mask)
    with open(root / "index.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "image", "mask", "width", "height"])
        writer.writeheader()
        writer.writerow({"id": "F_01", "image": "images/F_01.png", "mask": "masks/F_01_MA.png", "width": w, "height": h})
    return root


def _only(root: Path):
    (item,) = load_dataset(root)
    return item


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("scale", "none")])
def test_appearance_kinds_keep_size_and_masks(fundus_dataset, tmp_path, kind):
    original = _only(fundus_dataset)
    assert perturb_dataset(fundus_dataset, kind, tmp_path) == 1
    copy = _only(tmp_path)
    rgb = copy.load_rgb()
    assert rgb.shape == original.load_rgb().shape and (copy.width, copy.height) == (560, 480)
    np.testing.assert_array_equal(copy.load_mask(), original.load_mask())
    assert np.abs(rgb.astype(int) - original.load_rgb().astype(int)).mean() > 0.3  # it did change


def test_none_is_the_photograph_written_again(fundus_dataset, tmp_path):
    perturb_dataset(fundus_dataset, "none", tmp_path)
    diff = np.abs(_only(tmp_path).load_rgb().astype(int) - _only(fundus_dataset).load_rgb().astype(int))
    assert diff.mean() < 1.0  # JPEG at quality 95, nothing else


def test_haze_lifts_the_margin_and_the_fov_is_still_found(fundus_dataset, tmp_path):
    perturb_dataset(fundus_dataset, "haze", tmp_path)
    rgb = _only(tmp_path).load_rgb()
    assert 35 <= np.median(rgb[:20, :20]) <= 45  # the black margin is grey now
    assert find_fov(rgb).radius_px == pytest.approx(find_fov(_only(fundus_dataset).load_rgb()).radius_px, abs=3)


def test_scale_resamples_photograph_and_masks_together(fundus_dataset, tmp_path):
    assert main([str(fundus_dataset), "scale", str(tmp_path), "--amount", "0.5"]) == 0
    copy = _only(tmp_path)
    assert (copy.width, copy.height) == (280, 240) and copy.load_rgb().shape == (240, 280, 3)
    centres = ground_truth_from_mask(copy.load_mask()).centers_xy
    centres = centres[np.lexsort((centres[:, 1], centres[:, 0]))]
    # (x + 0.5) / 2 - 0.5 of the original dots: the masks moved with the photograph
    np.testing.assert_allclose(centres, [[99.75, 99.75], [129.75, 159.75], [164.75, 89.75], [179.75, 149.75]], atol=0.5)


def test_bad_kind_and_scale_are_refused(fundus_dataset, tmp_path):
    with pytest.raises(ValueError, match="Unknown kind"):
        perturb_dataset(fundus_dataset, "sepia", tmp_path)
    with pytest.raises(ValueError, match="scale factor"):
        perturb_dataset(fundus_dataset, "scale", tmp_path, amount=0.0)
