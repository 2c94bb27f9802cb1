"""Lesion-level FROC / CPM and pixel-level PR-AUC and Dice, with DESIGN.md's matching rule.

Matching rule (DESIGN.md, "How lesions.json is scored"): lesions are taken in order of
descending score; a lesion is a hit when its ``(x, y)`` lies within ``r + 4`` px of the
centre of a ground-truth MA not yet matched (``r`` = equivalent radius of the annotated
region, ``sqrt(area / pi)``); every other lesion, including a second hit on an MA already
matched, is a false positive. Ground truth comes from the mask's 8-connected components.

Because the matching of one lesion depends only on lesions scored above it in the same
image, it is computed once per image; the FROC then sweeps a global threshold over the
pooled lesions of all images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np

logger = logging.getLogger(__name__)

#: False positives per image at which the CPM averages sensitivity (Retinopathy Online Challenge).
CPM_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Extra matching tolerance in px beyond the equivalent radius (DESIGN.md).
MATCH_TOLERANCE_PX: float = 4.0


@dataclass(frozen=True)
class GroundTruth:
    """The annotated MAs of one image.

    Attributes
    ----------
    centers_xy
        ``(N, 2)`` float array of component centroids in image px.
    radii_px
        ``(N,)`` equivalent radii ``sqrt(area / pi)`` in px.
    """

    centers_xy: np.ndarray
    radii_px: np.ndarray

    def __len__(self) -> int:
        return int(self.radii_px.shape[0])


def ground_truth_from_mask(mask: np.ndarray) -> GroundTruth:
    """Return the MAs of a mask as 8-connected components.

    Parameters
    ----------
    mask
        H×W array; non-zero marks MA pixels.
    """
    n, _, stats, centroids = cv2.connectedComponentsWithStats(
        (np.asarray(mask) > 0).astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    return GroundTruth(centers_xy=centroids[1:].astype(np.float64).reshape(-1, 2),
                       radii_px=np.sqrt(areas / np.pi))


def match_lesions(xy: np.ndarray, scores: np.ndarray, truth: GroundTruth,
                  tolerance_px: float = MATCH_TOLERANCE_PX) -> np.ndarray:
    """Mark each lesion of one image as hit (True) or false positive (False).

    Parameters
    ----------
    xy
        ``(M, 2)`` lesion centres in image px.
    scores
        ``(M,)`` lesion scores; higher is more confident.
    truth
        The image's ground truth.
    tolerance_px
        Added to each MA's equivalent radius (4 px in DESIGN.md).

    Returns
    -------
    np.ndarray
        ``(M,)`` bool in the order of the input. Ties in score keep input order (stable
        sort). When a lesion lies within reach of several unmatched MAs it takes the
        nearest, which leaves the others for later lesions.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if xy.shape[0] != scores.shape[0]:
        raise ValueError("xy and scores must describe the same number of lesions.")
    hits = np.zeros(xy.shape[0], dtype=bool)
    if len(truth) == 0 or xy.shape[0] == 0:
        return hits
    free = np.ones(len(truth), dtype=bool)
    reach = truth.radii_px + tolerance_px
    for i in np.argsort(-scores, kind="stable"):
        d = np.hypot(truth.centers_xy[:, 0] - xy[i, 0], truth.centers_xy[:, 1] - xy[i, 1])
        ok = free & (d <= reach)
        if ok.any():
            j = int(np.flatnonzero(ok)[np.argmin(d[ok])])
            free[j] = False
            hits[i] = True
    return hits


@dataclass
class FrocResult:
    """A FROC curve and its CPM.

    Attributes
    ----------
    fp_per_image
        False positives per image at each operating point (ascending).
    sensitivity
        Fraction of ground-truth MAs hit at each operating point.
    thresholds
        Score threshold of each operating point (lesions with ``score >= t`` kept).
    cpm
        Mean sensitivity at :data:`CPM_FP_RATES`.
    sensitivity_at
        Sensitivity at each rate of :data:`CPM_FP_RATES`.
    n_images, n_truth, n_lesions
        Counts behind the curve.
    """

    fp_per_image: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    cpm: float
    sensitivity_at: dict[float, float] = field(default_factory=dict)
    n_images: int = 0
    n_truth: int = 0
    n_lesions: int = 0


def froc(per_image: Sequence[tuple[np.ndarray, np.ndarray, GroundTruth]],
         fp_rates: Sequence[float] = CPM_FP_RATES,
         tolerance_px: float = MATCH_TOLERANCE_PX) -> FrocResult:
    """Compute the FROC curve and CPM over several images.

    Parameters
    ----------
    per_image
        One ``(xy, scores, truth)`` triple per image (see :func:`match_lesions`).
    fp_rates
        False-positive rates per image at which sensitivity is read.
    tolerance_px
        Matching tolerance added to each MA's equivalent radius.

    Returns
    -------
    FrocResult
        Sensitivity at a rate is the best one reached with at most that many false
        positives per image; operating points only fall between distinct scores (tied
        lesions are kept or dropped together).
    """
    n_images = len(per_image)
    if n_images == 0:
        raise ValueError("FROC needs at least one image.")
    all_scores, all_hits = [], []
    n_truth = 0
    for xy, scores, truth in per_image:
        all_scores.append(np.asarray(scores, dtype=np.float64).reshape(-1))
        all_hits.append(match_lesions(xy, scores, truth, tolerance_px))
        n_truth += len(truth)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    hits = np.concatenate(all_hits) if all_hits else np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    # Operating points: after the last lesion of each group of equal scores.
    last = np.r_[scores[1:] != scores[:-1], True] if scores.size else np.zeros(0, bool)
    fppi = np.r_[0.0, fp[last] / n_images]
    sens = np.r_[0.0, tp[last] / max(n_truth, 1)]
    thr = np.r_[np.inf, scores[last]]
    at = {}
    for rate in fp_rates:
        ok = fppi <= rate + 1e-12
        at[float(rate)] = float(sens[ok].max()) if ok.any() else 0.0
    cpm = float(np.mean(list(at.values()))) if at else 0.0
    return FrocResult(fppi, sens, thr, cpm, at, n_images, n_truth, int(scores.size))


class PixelCurve:
    """Pools per-pixel scores over images for a pixel-level precision-recall AUC and Dice.

    Scores are quantised to 16 bits (as ``score.png`` stores them), so memory stays
    constant however many images are added.
    """

    BINS = 65536

    def __init__(self) -> None:
        self.pos = np.zeros(self.BINS, dtype=np.int64)
        self.neg = np.zeros(self.BINS, dtype=np.int64)
        self.dice_tp = 0
        self.dice_fp = 0
        self.dice_fn = 0

    def add(self, score: np.ndarray, truth: np.ndarray, predicted: Optional[np.ndarray] = None,
            valid: Optional[np.ndarray] = None) -> float:
        """Add one image.

        Parameters
        ----------
        score
            H×W per-pixel score in 0..1 (float) or uint16 as in ``score.png``.
        truth
            H×W bool ground-truth mask.
        predicted
            H×W bool predicted mask for Dice (defaults to ``score >= 0.5``).
        valid
            Optional H×W bool: only these pixels count (e.g. the FOV).

        Returns
        -------
        float
            This image's Dice (1.0 when both masks are empty).
        """
        score = np.asarray(score)
        if score.dtype == np.uint16:
            q = score.astype(np.int64)
        else:
            q = np.clip(np.rint(np.asarray(score, np.float64) * (self.BINS - 1)), 0, self.BINS - 1).astype(np.int64)
        truth = np.asarray(truth, bool)
        if predicted is None:
            predicted = q >= self.BINS // 2
        predicted = np.asarray(predicted, bool)
        if valid is not None:
            valid = np.asarray(valid, bool)
            q, truth, predicted = q[valid], truth[valid], predicted[valid]
        self.pos += np.bincount(q[truth].ravel(), minlength=self.BINS)
        self.neg += np.bincount(q[~truth].ravel(), minlength=self.BINS)
        tp = int(np.count_nonzero(predicted & truth))
        fp = int(np.count_nonzero(predicted & ~truth))
        fn = int(np.count_nonzero(~predicted & truth))
        self.dice_tp += tp
        self.dice_fp += fp
        self.dice_fn += fn
        return dice(tp, fp, fn)

    def aupr(self) -> float:
        """float: average precision (step-wise area under the PR curve) over pooled pixels."""
        total_pos = int(self.pos.sum())
        if total_pos == 0:
            return 0.0
        tp = np.cumsum(self.pos[::-1])
        fp = np.cumsum(self.neg[::-1])
        keep = (self.pos[::-1] + self.neg[::-1]) > 0
        tp, fp = tp[keep], fp[keep]
        precision = tp / np.maximum(tp + fp, 1)
        recall = tp / total_pos
        return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))

    def dice(self) -> float:
        """float: Dice over all pooled pixels."""
        return dice(self.dice_tp, self.dice_fp, self.dice_fn)


def dice(tp: int, fp: int, fn: int) -> float:
    """Return ``2 TP / (2 TP + FP + FN)``, 1.0 when nothing was annotated or predicted."""
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom
