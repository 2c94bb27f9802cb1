"""A stand-in for the live glance pipeline, so the UI runs before it is wired to the real one.

SWAP: ``appliance.glance`` owns fixations, heat map, saliency, SAM prompts and the
domain-knowledge filter. This module does a deliberately small version of the same steps
(dispersion fixations, a dark-blob response in the green channel around each fixation) behind
the :class:`appliance.ui.services.LiveGlance` interface the UI calls, and is used only when the
real pipeline is not importable.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Optional

import cv2
import numpy as np

from appliance.gaze.base import GazeSample
from appliance.glance.lesions import Lesion
from appliance.ui.services import LesionEvent

logger = logging.getLogger(__name__)


class StandInGlance:
    """Dispersion fixations -> dark blobs near the fixation -> lesions.

    Parameters
    ----------
    rgb
        The photograph, H×W×3 uint8.
    px_per_deg
        Image px per degree used when a sample carries none.
    min_fixation_ms, dispersion_deg
        Fixation detection (I-DT) settings.
    """

    def __init__(self, rgb: np.ndarray, px_per_deg: float, min_fixation_ms: float = 100.0,
                 dispersion_deg: float = 1.0) -> None:
        green = rgb[:, :, 1].astype(np.float32)
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
        closed = cv2.morphologyEx(green, cv2.MORPH_CLOSE, k)
        self.response = cv2.GaussianBlur(closed - green, (0, 0), 1.0)
        self.scale = float(np.percentile(self.response, 99.9)) or 1.0
        self.h, self.w = green.shape
        self.px_per_deg = px_per_deg
        self.min_fixation_ns = int(min_fixation_ms * 1e6)
        self.dispersion_deg = dispersion_deg
        self.window: list[GazeSample] = []
        self.fired = False
        self.lesions: dict[int, Lesion] = {}

    def _ppd(self, s: GazeSample) -> float:
        return s.px_per_deg if math.isfinite(s.px_per_deg) and s.px_per_deg > 0 else self.px_per_deg

    def push(self, sample: GazeSample) -> list[LesionEvent]:
        """Feed one sample; return lesion events when a fixation completes."""
        if not sample.has_gaze:
            self.window, self.fired = [], False
            return []
        self.window.append(sample)
        xs = [s.x for s in self.window]
        ys = [s.y for s in self.window]
        limit = self.dispersion_deg * self._ppd(sample)
        if (max(xs) - min(xs)) + (max(ys) - min(ys)) > limit:
            self.window, self.fired = [sample], False
            return []
        if self.fired or self.window[-1].timestamp_ns - self.window[0].timestamp_ns < self.min_fixation_ns:
            return []
        self.fired = True
        fixation_wall_ns = time.time_ns()
        cx, cy = float(np.mean(xs)), float(np.mean(ys))
        return [LesionEvent(kind, lesion, fixation_wall_ns)
                for kind, lesion in self._find(cx, cy, 1.5 * self._ppd(sample), max_n=5)]

    def prompt(self, x: float, y: float) -> Optional[Lesion]:
        """Segment at a tapped point: the nearest dark blob within 12 px, else a small disc."""
        found = self._find(x, y, 12.0, max_n=1, min_score=0.0)
        if found:
            return found[0][1]
        r = 5
        x0, y0 = int(round(x)) - r, int(round(y)) - r
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        mask = (xx ** 2 + yy ** 2) <= r * r
        lid = self._id(x, y)
        lesion = Lesion(lid, float(x), float(y), int(mask.sum()), (x0, y0, x0 + 2 * r + 1, y0 + 2 * r + 1), 0.0, "saliency", mask)
        self.lesions[lid] = lesion
        return lesion

    def close(self) -> None:
        """Nothing to release."""

    def _id(self, x: float, y: float) -> int:
        return int(y) * self.w + int(x)

    def _find(self, cx: float, cy: float, radius: float, max_n: int, min_score: float = 0.25) -> list[tuple[str, Lesion]]:
        r = int(max(radius, 8))
        x0, y0 = max(0, int(cx) - r), max(0, int(cy) - r)
        x1, y1 = min(self.w, int(cx) + r + 1), min(self.h, int(cy) + r + 1)
        if x1 <= x0 or y1 <= y0:
            return []
        roi = self.response[y0:y1, x0:x1]
        thr = max(float(roi.max()) * 0.5, 0.15 * self.scale)
        n, labels, stats, cents = cv2.connectedComponentsWithStats((roi >= thr).astype(np.uint8), connectivity=8)
        out: list[tuple[str, Lesion]] = []
        order = sorted(range(1, n), key=lambda i: -float(roi[labels == i].max()))
        for i in order:
            area = int(stats[i, cv2.CC_STAT_AREA])
            if not 3 <= area <= 600:
                continue
            score = float(min(1.0, roi[labels == i].max() / self.scale))
            if score < min_score:
                continue
            lx, ly = float(cents[i][0] + x0), float(cents[i][1] + y0)
            bx, by, bw, bh = (int(v) for v in stats[i, :4])
            mask = labels[by:by + bh, bx:bx + bw] == i
            lid = self._id(lx, ly)
            near = [l for l in self.lesions.values() if abs(l.x - lx) < 3 and abs(l.y - ly) < 3]
            kind = "updated" if near else "new"
            if near:
                lid = near[0].id
            lesion = Lesion(lid, lx, ly, area, (bx + x0, by + y0, bx + x0 + bw, by + y0 + bh), score, "saliency", mask)
            self.lesions[lid] = lesion
            out.append((kind, lesion))
            if len(out) >= max_n:
                break
        return out
