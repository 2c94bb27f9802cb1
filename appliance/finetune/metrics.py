"""Figures for the fine-tuning report: ROC AUC, CPM per scoring, and the loss-curve PNG.

Numpy/OpenCV only: no plotting library is needed on a build machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from appliance.eval.froc import GroundTruth, froc

logger = logging.getLogger(__name__)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN without both classes."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels) > 0
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order), np.float64)
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def cpm(scores: np.ndarray, xy: np.ndarray, image_of: np.ndarray,
        truth: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """CPM and sensitivities of candidates ranked by ``scores`` (DESIGN.md matching rule)."""
    per_image = []
    for i, (centers, radii) in enumerate(truth):
        sel = image_of == i
        per_image.append((xy[sel], scores[sel], GroundTruth(centers_xy=centers, radii_px=radii)))
    result = froc(per_image)
    return {"cpm": float(result.cpm), **{f"sens@{k:g}": float(v) for k, v in result.sensitivity_at.items()}}


def plot_losses(history: Sequence[dict[str, float]], path: Path, title: str = "fine-tuning") -> None:
    """Draw train and validation loss per epoch into a PNG (OpenCV)."""
    w, h, m = 720, 420, 60
    img = np.full((h, w, 3), 255, np.uint8)
    epochs = [r["epoch"] for r in history]
    series = {"train": ([r["train_total"] for r in history], (200, 80, 0)),
              "val": ([r["val_loss"] for r in history], (0, 0, 200))}
    values = np.concatenate([np.asarray(v) for v, _ in series.values()]) if history else np.zeros(1)
    lo, hi = float(values.min()), float(values.max())
    hi = hi if hi > lo else lo + 1.0
    x_of = lambda e: int(m + (e - 1) / max(1, max(epochs or [1]) - 1) * (w - 2 * m))  # noqa: E731
    y_of = lambda v: int(h - m - (v - lo) / (hi - lo) * (h - 2 * m))  # noqa: E731
    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    for frac in (0.0, 0.5, 1.0):
        v = lo + frac * (hi - lo)
        cv2.putText(img, f"{v:.3f}", (4, y_of(v) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for name, (vals, colour) in series.items():
        pts = np.array([[x_of(e), y_of(v)] for e, v in zip(epochs, vals)], np.int32)
        if len(pts) > 1:
            cv2.polylines(img, [pts], False, colour, 2)
        for p in pts:
            cv2.circle(img, tuple(int(c) for c in p), 3, colour, -1)
        cv2.putText(img, name, (w - m - 80, m + 20 + 18 * list(series).index(name)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
    cv2.putText(img, f"{title}: loss per epoch", (m, m - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
    cv2.putText(img, "epoch", (w // 2 - 20, h - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)
