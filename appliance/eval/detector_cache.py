"""Run the scan-mode detector over a data set, caching candidates on disk.

Tuning the ranker or the rules re-scores the same candidates many times; detection is the
slow part (a few seconds per photograph), so its output is cached per image under
``cache_dir`` (default ``/tmp/glanceseg-cache``), keyed by the image's path, size and
mtime and by the detector's settings.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from appliance.eval.dataset import DatasetItem
from appliance.eval.froc import GroundTruth, ground_truth_from_mask
from appliance.glance.candidates import Candidate, detect
from appliance.glance.saliency import SaliencyParams
from appliance.imaging.fov import FieldOfView, find_fov
from appliance.imaging.scale import um_per_px

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("/tmp/glanceseg-cache")
#: Candidates measured per photograph before ranking (the ranker keeps the best few hundred).
SCAN_CANDIDATES = 4000
_VERSION = 6


@dataclass
class DetectedImage:
    """Candidates and ground truth of one photograph."""

    id: str
    candidates: list[Candidate]
    truth: GroundTruth
    fov_mask: np.ndarray
    fov_center_xy: tuple[float, float]
    fov_radius_px: float
    um_per_px: float


def detect_item(item: DatasetItem, fov_deg: float, params: SaliencyParams = SaliencyParams(),
                cache_dir: Optional[Path] = DEFAULT_CACHE_DIR,
                max_candidates: int = SCAN_CANDIDATES) -> DetectedImage:
    """Detect candidates in one data-set photograph, from the cache when possible."""
    st = item.image_path.stat()
    key = hashlib.sha256(repr((_VERSION, str(item.image_path), st.st_size, st.st_mtime_ns,
                               fov_deg, asdict(params), max_candidates)).encode()).hexdigest()[:16]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{item.id}-{key}.pkl"
        if path.is_file():
            with open(path, "rb") as fh:
                return pickle.load(fh)
    rgb = item.load_rgb()
    fov: FieldOfView = find_fov(rgb)
    scale = um_per_px(fov.diameter_px, fov_deg)
    cands = detect(rgb, fov, scale, params=params, max_candidates=max_candidates, rank=False)
    out = DetectedImage(item.id, cands, ground_truth_from_mask(item.load_mask()), fov.mask,
                        fov.center_xy, fov.radius_px, scale)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(out, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    return out


#: Field angles the rankers are trained at: IDRiD's true 50° and the angles a misconfigured
#: or unknown camera would be read at (the appliance's default is 45°). Each angle rescales
#: every µm measurement by up to 20 %, a scale augmentation that also makes the rankers
#: forgive a wrong ``imaging.fov_deg``.
TRAIN_FOV_DEGS: tuple[float, ...] = (50.0, 45.0, 40.0, 55.0)


def detect_at_angles(items: Sequence[DatasetItem], fov_degs: Sequence[float],
                     cache_dir: Optional[Path] = DEFAULT_CACHE_DIR) -> list[list[DetectedImage]]:
    """Detect every item at every field angle: one list per item, angles in the given order.

    Kept per item so cross-validation folds split photographs, never one photograph's angles.
    """
    return [[detect_item(it, deg, cache_dir=cache_dir) for deg in fov_degs] for it in items]


def scale_key(det: DetectedImage) -> str:
    """A key unique per photograph and assumed scale (``id`` alone repeats across angles)."""
    return f"{det.id}@{det.um_per_px:.4f}"


def candidate_labels(det: DetectedImage, tolerance_px: float = 4.0) -> np.ndarray:
    """True for candidates within ``r + tolerance`` of any ground-truth MA (training labels)."""
    if not det.candidates or len(det.truth) == 0:
        return np.zeros(len(det.candidates), bool)
    xy = np.array([[c.x, c.y] for c in det.candidates])
    c = det.truth.centers_xy
    d = np.hypot(xy[:, None, 0] - c[None, :, 0], xy[:, None, 1] - c[None, :, 1])
    return (d <= det.truth.radii_px[None, :] + tolerance_px).any(axis=1)
