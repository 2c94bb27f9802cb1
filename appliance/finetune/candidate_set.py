"""Training examples from a data set laid out like ``idrid-ma``, as clinicians would label them.

Treats the expert masks as a clinician's decisions over the appliance's own candidates: a
candidate whose centre matches an annotated MA (DESIGN.md's rule, r + 4 px) is *accepted*,
one matching none is *rejected* (a saliency false positive), and an annotated MA that no
candidate found is *added*. Pure numpy/OpenCV, so it runs in the appliance's environment; the
torch side reads the JSON it writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import cv2
import numpy as np

from appliance.eval.dataset import load_dataset
from appliance.eval.froc import ground_truth_from_mask, match_lesions

logger = logging.getLogger(__name__)

#: Prompt box half-side for a candidate: its radius plus this margin, at least MIN_HALF_PX.
BOX_MARGIN_PX = 4.0
MIN_HALF_PX = 6.0
MAX_HALF_PX = 24.0
FEATURES_KEPT = ("saliency", "z", "contrast", "blob", "vessel", "diameter_um", "radial", "ray_consistency")


def candidate_box(x: float, y: float, radius_px: float) -> list[float]:
    """Return the square prompt box ``[x0, y0, x1, y1]`` (image px) for a candidate.

    Why a square around the peak: a candidate has a centre and a radius estimate, not an
    outline; the margin makes room for the lesion's edge, as the annotations' boxes do.
    """
    half = float(np.clip(radius_px + BOX_MARGIN_PX, MIN_HALF_PX, MAX_HALF_PX))
    return [x - half, y - half, x + half, y + half]


def image_examples(rgb: np.ndarray, mask: np.ndarray, fov_deg: float, max_candidates: int = 400) -> dict[str, Any]:
    """Detect candidates in one photograph and label them against its MA mask.

    Returns
    -------
    dict
        ``candidates``: list of ``{x, y, radius_px, box, hit, features}``; ``truth``: list of
        ``{x, y, r, bbox, found}`` (8-connected components of the mask).
    """
    from appliance.glance.candidates import detect
    from appliance.imaging.fov import find_fov
    from appliance.imaging.scale import um_per_px

    fov = find_fov(rgb)
    scale = um_per_px(fov.diameter_px, fov_deg)
    cands = detect(rgb, fov, scale, max_candidates=max_candidates)
    truth = ground_truth_from_mask(mask)
    xy = np.array([[c.x, c.y] for c in cands], np.float64).reshape(-1, 2)
    sal = np.array([c.saliency for c in cands], np.float64)
    hits = match_lesions(xy, sal, truth)
    found = np.zeros(len(truth), bool)
    if len(truth) and len(cands):
        reach = truth.radii_px + 4.0
        for (x, y), hit in zip(xy, hits):
            if hit:
                d = np.hypot(truth.centers_xy[:, 0] - x, truth.centers_xy[:, 1] - y)
                found[int(np.argmin(np.where(d <= reach, d, np.inf)))] = True
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return {
        "um_per_px": scale,
        "candidates": [{"x": round(c.x, 2), "y": round(c.y, 2), "radius_px": round(c.radius_px, 2),
                        "box": [round(v, 2) for v in candidate_box(c.x, c.y, c.radius_px)], "hit": bool(h),
                        "features": {k: round(float(c.features.get(k, 0.0)), 5) for k in FEATURES_KEPT}}
                       for c, h in zip(cands, hits)],
        "truth": [{"x": round(float(cx), 2), "y": round(float(cy), 2), "r": round(float(r), 2),
                   "bbox": [int(stats[i + 1, 0]), int(stats[i + 1, 1]), int(stats[i + 1, 0] + stats[i + 1, 2]),
                            int(stats[i + 1, 1] + stats[i + 1, 3])], "found": bool(f)}
                  for i, ((cx, cy), r, f) in enumerate(zip(truth.centers_xy, truth.radii_px, found))],
    }


def build_candidate_set(data_dir: Path, ids: Sequence[str], out_path: Path, fov_deg: float = 50.0,
                        progress: Optional[Iterable] = None) -> dict[str, Any]:
    """Write ``out_path`` (JSON) with the labelled candidates of every listed image.

    The set records the sha256 of every photograph and mask, so a fine-tuned model's
    lineage can name exactly the data it learnt from.
    """
    items = load_dataset(Path(data_dir), ids)
    images = {}
    digest = hashlib.sha256()
    for item in items:
        rgb, mask = item.load_rgb(), item.load_mask()
        entry = image_examples(rgb, mask, fov_deg)
        for path in (item.image_path, item.mask_path):
            digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode())
        entry.update(image=str(item.image_path.relative_to(Path(data_dir).resolve())),
                     mask=str(item.mask_path.relative_to(Path(data_dir).resolve())),
                     width=int(rgb.shape[1]), height=int(rgb.shape[0]))
        images[item.id] = entry
        n_hit = sum(c["hit"] for c in entry["candidates"])
        logger.info("%s: %d candidates, %d hit %d MAs", item.id, len(entry["candidates"]), n_hit, len(entry["truth"]))
    doc = {"format": "glanceseg-candidate-set/1", "fov_deg": fov_deg, "data_sha256": digest.hexdigest(),
           "box_rule": {"margin_px": BOX_MARGIN_PX, "min_half_px": MIN_HALF_PX, "max_half_px": MAX_HALF_PX},
           "images": images}
    Path(out_path).write_text(json.dumps(doc))
    return doc
