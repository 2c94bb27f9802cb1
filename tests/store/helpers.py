"""Test inputs for the store and sync tests: a config on a temp folder, photographs and real masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from appliance.config import Config
from appliance.glance.lesions import Lesion, SegmentationResult


@dataclass
class FakePhoto:
    """Stands in for ``imaging.io.Photograph`` (same attributes), so these tests need no image file."""

    rgb: np.ndarray
    source: str = "test.png"
    sha256: str = "0" * 64
    fov_deg: Optional[float] = 45.0
    dicom: dict[str, Any] = field(default_factory=dict)


def make_config(data_dir: Path, url: str = "", **sections: dict) -> Config:
    base = {"data": {"dir": str(data_dir), "min_free_mb": 1}}
    if url:
        base["dicomweb"] = {"url": url, "timeout_s": 10.0}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return Config().replace(**base)


def make_study_inputs(seed: int = 0, h: int = 120, w: int = 160, n: int = 6) -> tuple[FakePhoto, SegmentationResult]:
    """A random photograph and a result with ``n`` lesions of irregular real masks, some below threshold."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    lesions = []
    for i in range(n):
        mh, mw = int(rng.integers(3, 12)), int(rng.integers(3, 12))
        x0, y0 = int(rng.integers(0, w - mw)), int(rng.integers(0, h - mh))
        mask = rng.random((mh, mw)) > 0.35
        mask[mh // 2, mw // 2] = True
        ys, xs = np.nonzero(mask)
        lesions.append(Lesion(id=100 + i, x=float(x0 + xs.mean()), y=float(y0 + ys.mean()), area_px=int(mask.sum()),
                              bbox=(x0, y0, x0 + mw, y0 + mh), score=float(rng.uniform(0.05, 0.99)),
                              source="model", mask=mask, features={"contrast": float(rng.random())}))
    lesions.sort(key=lambda l: -l.score)
    result = SegmentationResult(width=w, height=h, mode="scan", lesions=lesions, display_threshold=0.4,
                                model_name="litemedsam", model_sha256="ab" * 32, timings_ms={"total": 12.5})
    return FakePhoto(rgb=rgb, sha256=f"{seed:064d}"), result


def add_study(store, seed: int, patient: str = "P", eye: str = "L", **kw):
    """Add a synthetic study to ``store`` and return its StudyRecord."""
    photo, result = make_study_inputs(seed, **kw)
    return store.add_study(photo, patient, eye, result, {"samples": 10 * seed})
