"""Helpers shared by the gaze tests: synthetic sample streams at 200 Hz."""

from __future__ import annotations

import math

import numpy as np

from appliance.gaze.base import GazeSample

STEP_NS = 5_000_000  # 200 Hz
PPD = 100.0  # image px per degree used by the synthetic streams


def fixation(t0_ns: int, x: float, y: float, ms: float, noise_px: float = 2.0, seed: int = 0,
             ppd: float = PPD) -> list[GazeSample]:
    """Samples of one fixation at (x, y) lasting ``ms`` (inclusive of both ends)."""
    rng = np.random.default_rng(seed)
    n = int(round(ms / 5.0)) + 1
    jitter = rng.uniform(-noise_px, noise_px, (n, 2))
    return [GazeSample(t0_ns + i * STEP_NS, x + jitter[i, 0], y + jitter[i, 1], True, ppd) for i in range(n)]


def no_gaze(t0_ns: int, ms: float, ppd: float = PPD) -> list[GazeSample]:
    """Samples without gaze (a blink) lasting ``ms``."""
    n = int(round(ms / 5.0))
    return [GazeSample(t0_ns + i * STEP_NS, math.nan, math.nan, True, ppd) for i in range(n)]


def next_t(samples: list[GazeSample]) -> int:
    """Timestamp one sample after the last."""
    return samples[-1].timestamp_ns + STEP_NS


def same_samples(a: list[GazeSample], b: list[GazeSample]) -> bool:
    """Equality that treats NaN == NaN."""
    if len(a) != len(b):
        return False
    for s, t in zip(a, b):
        if s.timestamp_ns != t.timestamp_ns or s.worn != t.worn:
            return False
        for u, v in ((s.x, t.x), (s.y, t.y), (s.px_per_deg, t.px_per_deg)):
            if not (u == v or (math.isnan(u) and math.isnan(v))):
                return False
    return True
