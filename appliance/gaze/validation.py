"""A short accuracy check before reading: a few on-screen targets, one constant correction.

Why: a head-worn tracker's error for this wearer and this fit of the glasses is mostly a
constant offset (slippage, the wearer's eye). Looking at a handful of targets measures it;
the offset is corrected, and what remains (the spread around the targets after correction)
says whether gaze can be trusted to pick a region of the photograph. The threshold is in
degrees of visual angle because the heat map's kernel (about 1°) is in degrees too.

All coordinates here are screen px (the targets are drawn on the screen, and the correction
is applied between the marker homography and the viewer's screen -> image transform).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def validation_targets(width_px: int, height_px: int, inset: float = 0.2) -> list[tuple[float, float]]:
    """Return five targets (centre, then the four corners ``inset`` in from the edges), screen px."""
    if not 0.05 <= inset < 0.5:
        raise ValueError("The target inset must be between 0.05 and 0.5 of the screen size.")
    x0, x1 = width_px * inset, width_px * (1 - inset)
    y0, y1 = height_px * inset, height_px * (1 - inset)
    return [(width_px / 2.0, height_px / 2.0), (x0, y0), (x1, y0), (x1, y1), (x0, y1)]


@dataclass(frozen=True)
class TargetWindow:
    """When one target was shown: ``start_ns``..``end_ns`` in the appliance clock."""

    x_px: float
    y_px: float
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class TargetResult:
    """Gaze at one target: median gaze (screen px) or None, samples used, errors in degrees."""

    target: tuple[float, float]
    gaze: Optional[tuple[float, float]]
    samples: int
    error_deg: float
    residual_deg: float


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of a validation.

    Attributes
    ----------
    offset_px
        Constant correction (dx, dy) in screen px to *add* to mapped gaze.
    error_deg
        Mean error before correction.
    residual_deg
        Mean error after correction: the figure that decides ``ok``.
    ok
        True when enough targets were seen and the residual is within the limit.
    message
        A sentence for the clinician.
    """

    offset_px: tuple[float, float]
    error_deg: float
    residual_deg: float
    max_residual_deg: float
    targets: tuple[TargetResult, ...]
    ok: bool
    message: str


def evaluate(samples: Sequence[tuple[int, float, float]], windows: Sequence[TargetWindow],
             screen_px_per_deg: float, max_error_deg: float = 2.5, settle_ms: float = 300.0,
             min_samples: int = 10, min_targets: int = 3) -> ValidationResult:
    """Measure the gaze offset and the error left after correcting it.

    Parameters
    ----------
    samples
        (timestamp_ns, x, y) in screen px, appliance clock; NaN where unmapped.
    windows
        When each target was shown.
    screen_px_per_deg
        Screen px per degree at the viewing distance (``geometry.screen_px_per_deg``).
    max_error_deg
        The largest residual error still trusted.
    settle_ms
        Samples in the first ``settle_ms`` of a window are the saccade towards it: skipped.
    min_samples, min_targets
        A target counts with at least ``min_samples`` mapped samples; the result needs at
        least ``min_targets`` counted targets.

    Raises
    ------
    ValueError
        If ``screen_px_per_deg`` is not positive or no windows are given.
    """
    if not screen_px_per_deg > 0:
        raise ValueError("screen_px_per_deg must be a positive number.")
    if not windows:
        raise ValueError("At least one target window is needed.")
    arr = np.asarray(samples, dtype=np.float64).reshape(-1, 3)
    t = np.asarray([s[0] for s in samples], dtype=np.int64)
    medians: list[Optional[np.ndarray]] = []
    counts = []
    for w in windows:
        sel = (t >= w.start_ns + int(settle_ms * 1e6)) & (t <= w.end_ns)
        pts = arr[sel, 1:]
        pts = pts[np.isfinite(pts).all(axis=1)]
        counts.append(len(pts))
        medians.append(np.median(pts, axis=0) if len(pts) >= min_samples else None)
    seen = [(w, m) for w, m in zip(windows, medians) if m is not None]
    if seen:
        deltas = np.array([m - (w.x_px, w.y_px) for w, m in seen])
        offset = -np.median(deltas, axis=0)
    else:
        offset = np.zeros(2)
    results = []
    for w, m, n in zip(windows, medians, counts):
        if m is None:
            results.append(TargetResult((w.x_px, w.y_px), None, n, math.nan, math.nan))
            continue
        err = float(np.hypot(*(m - (w.x_px, w.y_px)))) / screen_px_per_deg
        res = float(np.hypot(*(m + offset - (w.x_px, w.y_px)))) / screen_px_per_deg
        results.append(TargetResult((w.x_px, w.y_px), (float(m[0]), float(m[1])), n, err, res))
    counted = [r for r in results if r.gaze is not None]
    error = float(np.mean([r.error_deg for r in counted])) if counted else math.nan
    residual = float(np.mean([r.residual_deg for r in counted])) if counted else math.nan
    worst = float(max((r.residual_deg for r in counted), default=math.nan))
    offset_deg = float(np.hypot(*offset)) / screen_px_per_deg
    if len(counted) < min_targets:
        ok, message = False, (f"Only {len(counted)} of {len(windows)} targets were seen; "
                              "check the screen markers are in view and repeat the check.")
    elif residual > max_error_deg:
        ok, message = False, (f"Gaze error is {residual:.1f}° after correction (limit "
                              f"{max_error_deg:.1f}°): too large to trust. Refit the glasses and repeat.")
    else:
        ok, message = True, (f"Gaze accuracy {residual:.1f}° after correcting a {offset_deg:.1f}° "
                             "offset: ready to read.")
    logger.info("Validation: offset %.1f°, residual %.2f° over %d targets, ok=%s",
                offset_deg, residual, len(counted), ok)
    return ValidationResult((float(offset[0]), float(offset[1])), error, residual, worst,
                            tuple(results), ok, message)
