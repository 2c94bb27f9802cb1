"""The detection cache read at several field angles (the rankers' scale augmentation)."""

from __future__ import annotations

import cv2
import numpy as np

from appliance.eval.dataset import DatasetItem
from appliance.eval.detector_cache import candidate_labels, detect_at_angles, scale_key


def test_each_photograph_is_detected_once_per_angle_and_cached(idrid_dir, tmp_path):
    image = cv2.imread(str(idrid_dir / "images" / "IDRiD_03.jpg"))
    mask = cv2.imread(str(idrid_dir / "masks" / "IDRiD_03_MA.png"), cv2.IMREAD_GRAYSCALE)
    y, x = 1000, 1250
    cv2.imwrite(str(tmp_path / "c.png"), image[y:y + 500, x:x + 500])
    cv2.imwrite(str(tmp_path / "c_MA.png"), mask[y:y + 500, x:x + 500])
    item = DatasetItem("CROP", tmp_path / "c.png", tmp_path / "c_MA.png", 500, 500)
    cache = tmp_path / "cache"

    (d50, d40), = detect_at_angles([item], (50.0, 40.0), cache_dir=cache)
    # The same photograph at two assumed scales: 25 % larger µm per px at 50° than at 40°.
    assert d50.id == d40.id == "CROP"
    assert abs(d50.um_per_px / d40.um_per_px - 1.25) < 1e-9
    assert scale_key(d50) != scale_key(d40)
    assert candidate_labels(d50).any()  # the crop holds annotated MAs a candidate reaches
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2

    (again, _), = detect_at_angles([item], (50.0, 40.0), cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == files
    np.testing.assert_allclose([[c.x, c.y] for c in again.candidates], [[c.x, c.y] for c in d50.candidates])
