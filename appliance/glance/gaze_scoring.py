"""Gaze-weighted lesion scores: a candidate the clinician dwelt near outranks one merely passed over.

Why: in gaze mode the detector alone decides which candidate in a glanced region is the MA,
and on its own it picks the annotated MA as the best of its neighbours only about a third
of the time. The reader's gaze says more than *where* they looked: a clinician who notices
a lesion fixates on it for longer than a search fixation. So each fixation is weighed by
how much longer it lasted than the reading's median fixation (a *dwell*), and its weight is
shared out among the candidates near it, in proportion to each one's detector odds times
the likelihood of the tracker's error putting the gaze where it landed (an isotropic normal
whose mean error is ``tracker_error_deg``, scaled by the fixation's own px per degree). A
``no_lesion_odds`` share stays with "nothing here", so a dwell on empty ground lifts no
candidate much. The evidence of all fixations combines like independent chances,
``1 - prod(1 - weight * share)``, and the gaze-mode score is ``sqrt(detector score) *
evidence``, which keeps the detector's order among candidates the gaze cannot separate.
When the dwells show a constant tracker offset (:mod:`appliance.glance.gaze_calibration`),
the fixations are shifted by it and the error model narrowed to what remains.

Measured on IDRiD_01-12 with the simulated reader (:mod:`appliance.eval.gaze_eval`), the
parameters below lift dwelt-MA sensitivity at 1 false positive per image from 0.13 to 0.17
averaged over three readings; see ``docs/performance.md`` for the report split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from appliance.gaze.fixations import Fixation
from appliance.glance.gaze_calibration import GazeCalibration, calibrate
from appliance.glance.lesions import Lesion

#: Fixations per block when sharing out evidence: bounds memory at lesions × block floats.
_BLOCK = 256


@dataclass(frozen=True)
class GazeScoringParams:
    """How gaze evidence is computed (see the module docstring).

    Attributes
    ----------
    tracker_error_deg
        Mean angular error of the eye tracker (Pupil Labs Neon: 1.3-1.8°).
    no_lesion_odds
        Odds mass a fixation keeps for "no candidate here".
    dwell_ratio, dwell_softness
        A fixation's weight is a logistic in its duration: one half at ``dwell_ratio`` times
        the reading's median duration, rising over ``dwell_softness`` medians.
    """

    tracker_error_deg: float = 1.5
    no_lesion_odds: float = 0.1
    dwell_ratio: float = 1.2
    dwell_softness: float = 0.25

    def __post_init__(self) -> None:
        if not (self.tracker_error_deg > 0 and self.no_lesion_odds > 0 and self.dwell_softness > 0):
            raise ValueError("Tracker error, no-lesion odds and dwell softness must be positive.")


def dwell_weights(durations_ms: np.ndarray, params: GazeScoringParams = GazeScoringParams()) -> np.ndarray:
    """Return each fixation's dwell weight in 0..1, relative to the median duration."""
    d = np.asarray(durations_ms, dtype=np.float64)
    if d.size == 0:
        return d
    med = max(float(np.median(d)), 1.0)
    z = (d - params.dwell_ratio * med) / (params.dwell_softness * med)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def gaze_evidence(xy: np.ndarray, scores: np.ndarray, fixations: Sequence[Fixation],
                  params: GazeScoringParams = GazeScoringParams(),
                  calibration: Optional[GazeCalibration] = None) -> np.ndarray:
    """Return, per candidate, the evidence in 0..1 that a dwell was aimed at it.

    Parameters
    ----------
    xy
        ``(N, 2)`` candidate centres in image px.
    scores
        ``(N,)`` detector scores in 0..1.
    fixations
        The reading's fixations (image px, each with its px per degree).
    calibration
        A fitted tracker offset (:mod:`appliance.glance.gaze_calibration`): fixations are
        shifted by it and the error model narrowed to its residual error.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    n = xy.shape[0]
    fx = [f for f in fixations if math.isfinite(f.px_per_deg) and f.px_per_deg > 0]
    if n == 0 or not fx:
        return np.zeros(n)
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-4, 1 - 1e-4)
    odds = p / (1 - p)
    if calibration is None:
        F = np.array([[f.x, f.y, f.px_per_deg] for f in fx])
        error_deg = params.tracker_error_deg
    else:
        F = np.array([[*calibration.shift(f), f.px_per_deg] for f in fx])
        error_deg = calibration.error_deg
    w = dwell_weights(np.array([f.duration_ms for f in fx]), params)
    # Per-axis sigma of a 2-D normal whose mean error magnitude is error_deg.
    sigma = error_deg * F[:, 2] / math.sqrt(math.pi / 2)
    log_miss = np.zeros(n)
    for b in range(0, len(fx), _BLOCK):
        s = slice(b, b + _BLOCK)
        d2 = (xy[:, None, 0] - F[None, s, 0]) ** 2 + (xy[:, None, 1] - F[None, s, 1]) ** 2
        lik = odds[:, None] * np.exp(-d2 / (2 * sigma[None, s] ** 2))
        share = lik / (params.no_lesion_odds + lik.sum(axis=0, keepdims=True))
        log_miss += np.log1p(-np.minimum(w[None, s] * share, 1 - 1e-9)).sum(axis=1)
    return 1.0 - np.exp(log_miss)


def rescore(lesions: Sequence[Lesion], fixations: Sequence[Fixation],
            params: GazeScoringParams = GazeScoringParams(),
            fov_area_px: Optional[float] = None) -> tuple[list[Lesion], Optional[GazeCalibration]]:
    """Return the lesions with gaze-mode scores, best first, and the tracker calibration used.

    With ``fov_area_px`` the tracker's offset is fitted first (:func:`~appliance.glance.
    gaze_calibration.calibrate`) and used when it convinces. Each lesion's detector score
    is kept in ``features["detector_score"]`` and its gaze evidence in
    ``features["gaze_evidence"]``, for audit.
    """
    if not lesions:
        return [], None
    xy = np.array([[l.x, l.y] for l in lesions])
    det = np.array([l.score for l in lesions])
    calibration = None
    fx = [f for f in fixations if math.isfinite(f.px_per_deg) and f.px_per_deg > 0]
    if fov_area_px is not None and fx:
        calibration = calibrate(xy, det, fx, dwell_weights(np.array([f.duration_ms for f in fx]), params),
                                fov_area_px, params.tracker_error_deg)
    ev = gaze_evidence(xy, det, fixations, params, calibration)
    out = [replace(l, score=float(np.sqrt(s) * e),
                   features={**l.features, "detector_score": float(s), "gaze_evidence": float(e)})
           for l, s, e in zip(lesions, det, ev)]
    return sorted(out, key=lambda l: (-l.score, l.id)), calibration
