"""Gaze-mode evaluation with the simulated reader: what a clinician's glance finds.

For each photograph the simulated reader (:mod:`appliance.gaze.simulated`) reads it with
the ground-truth MAs to notice, and its gaze runs through the incremental pipeline. Figures:

- sensitivity among the MAs the reader *dwelt on*, at a given number of false positives
  per image (a false positive is a lesion that matches no MA at all, with DESIGN.md's rule),
  and the same for the lesions ranked by the detector's score alone (``_detector_only``:
  what the gaze-mode scoring of :mod:`appliance.glance.gaze_scoring` adds);
- the share of *all* MAs found without any manual prompt, at the display threshold;
- latency from a fixation's end to its first lesions and to its last (model-refined) ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from appliance.eval.dataset import DatasetItem
from appliance.eval.froc import GroundTruth, ground_truth_from_mask, match_lesions
from appliance.eval.runner import lesion_arrays
from appliance.gaze.simulated import ReaderParams, ma_targets_from_mask, simulate_reading
from appliance.glance.engine import GlanceEngine
from appliance.glance.live import GlancePipeline
from appliance.imaging.io import load_photograph

logger = logging.getLogger(__name__)

FP_RATES = (0.5, 1.0, 2.0)


@dataclass
class GazeImage:
    """Per-image data kept to sweep the score threshold afterwards."""

    id: str
    scores: np.ndarray
    hit_any: np.ndarray
    hit_dwelt: np.ndarray
    n_dwelt: int
    n_truth: int
    shown_hits_any: int
    first_ms: list[float] = field(default_factory=list)
    done_ms: list[float] = field(default_factory=list)


def _sensitivity_at(images: Sequence[GazeImage], rate: float) -> tuple[float, float]:
    """Best dwelt-MA sensitivity with at most ``rate`` false positives per image; and its threshold."""
    scores = np.concatenate([im.scores for im in images]) if images else np.zeros(0)
    hit_any = np.concatenate([im.hit_any for im in images]) if images else np.zeros(0, bool)
    hit_dwelt = np.concatenate([im.hit_dwelt for im in images]) if images else np.zeros(0, bool)
    n_dwelt = sum(im.n_dwelt for im in images)
    order = np.argsort(-scores, kind="stable")
    fp = np.cumsum(~hit_any[order]) / max(len(images), 1)
    tp = np.cumsum(hit_dwelt[order]) / max(n_dwelt, 1)
    ok = fp <= rate + 1e-12
    if not ok.any():
        return 0.0, float("inf")
    best = int(np.flatnonzero(ok)[np.argmax(tp[ok])])
    return float(tp[best]), float(scores[order][best])


def evaluate_gaze(items: Sequence[DatasetItem], engine: GlanceEngine, seed: int = 0,
                  reader: Optional[ReaderParams] = None, progress: bool = True) -> dict[str, object]:
    """Run the simulated reader and the live pipeline on each item; return the figures."""
    reader = reader or ReaderParams(display=engine.config.display)
    images: list[GazeImage] = []
    detector_only: list[GazeImage] = []  # the same lesions ranked without the gaze (the ablation)
    for item in tqdm(items, disable=not progress, desc="eval gaze", unit="image"):
        photo = load_photograph(item.image_path, engine.config.imaging)
        mask = item.load_mask()
        truth = ground_truth_from_mask(mask)
        session = engine.open(photo)
        mas = ma_targets_from_mask(mask)
        reading = simulate_reading(photo.width, photo.height, mas, reader, seed=seed,
                                   fov_center_xy=session.fov.center_xy, fov_radius_px=session.fov.radius_px,
                                   fov_mask=session.fov.mask)
        pipeline = GlancePipeline.for_session(session)
        pipeline.feed_many(reading.samples)
        pipeline.flush()
        result = pipeline.result()
        engine.forget(photo)
        xy, scores = lesion_arrays(result)
        dwelt = [mas[i] for i in reading.dwelt]
        dwelt_truth = GroundTruth(np.array([[m.x, m.y] for m in dwelt]).reshape(-1, 2),
                                  np.array([m.radius_px for m in dwelt]))
        hit_any = match_lesions(xy, scores, truth)
        shown = scores >= result.display_threshold
        images.append(GazeImage(
            item.id, scores, hit_any, match_lesions(xy, scores, dwelt_truth), len(dwelt), len(truth),
            int(match_lesions(xy[shown], scores[shown], truth).sum()),
            [t.first_ms for t in pipeline.stats.timings if t.first_ms is not None],
            [t.done_ms for t in pipeline.stats.timings if t.cells],
        ))
        det = np.array([l.features.get("detector_score", l.score) for l in result.lesions], dtype=np.float64)
        detector_only.append(GazeImage(item.id, det, match_lesions(xy, det, truth),
                                       match_lesions(xy, det, dwelt_truth), len(dwelt), len(truth), 0))
    first = np.concatenate([im.first_ms for im in images]) if images else np.zeros(0)
    done = np.concatenate([im.done_ms for im in images]) if images else np.zeros(0)
    figures: dict[str, object] = {
        "n_images": len(images),
        "n_truth": sum(im.n_truth for im in images),
        "n_dwelt": sum(im.n_dwelt for im in images),
        "share_all_found_shown": round(sum(im.shown_hits_any for im in images) / max(1, sum(im.n_truth for im in images)), 4),
        "latency_first_ms_p50": round(float(np.percentile(first, 50)), 1) if first.size else None,
        "latency_first_ms_p95": round(float(np.percentile(first, 95)), 1) if first.size else None,
        "latency_done_ms_p50": round(float(np.percentile(done, 50)), 1) if done.size else None,
        "latency_done_ms_p95": round(float(np.percentile(done, 95)), 1) if done.size else None,
    }
    for rate in FP_RATES:
        sens, thr = _sensitivity_at(images, rate)
        figures[f"dwelt_sensitivity_at_{rate:g}_fppi"] = round(sens, 4)
        figures[f"threshold_at_{rate:g}_fppi"] = None if not np.isfinite(thr) else round(thr, 4)
        figures[f"dwelt_sensitivity_at_{rate:g}_fppi_detector_only"] = round(_sensitivity_at(detector_only, rate)[0], 4)
    figures["per_image"] = [
        {"id": im.id, "n_truth": im.n_truth, "n_dwelt": im.n_dwelt, "n_lesions": int(im.scores.size),
         "fp": int((~im.hit_any).sum())} for im in images
    ]
    return figures
