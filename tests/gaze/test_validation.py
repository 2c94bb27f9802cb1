"""The accuracy check: offsets are measured and corrected, large errors are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.gaze.validation import TargetWindow, evaluate, validation_targets

PPD = 40.0  # screen px per degree


def _session(error_fn, seed=0, per_target_ms=1500, rate_hz=200, missing=()):
    rng = np.random.default_rng(seed)
    targets = validation_targets(1920, 1080)
    windows, samples = [], []
    t0 = 0
    for i, (x, y) in enumerate(targets):
        start, end = t0, t0 + per_target_ms * 1_000_000
        windows.append(TargetWindow(x, y, start, end))
        for t in range(start, end, int(1e9 / rate_hz)):
            if i in missing:
                samples.append((t, math.nan, math.nan))
                continue
            if t < start + 200_000_000:  # still travelling from the previous target
                samples.append((t, x + 400.0, y - 300.0))
                continue
            dx, dy = error_fn(x, y)
            samples.append((t, x + dx + rng.normal(0, 8), y + dy + rng.normal(0, 8)))
        t0 = end
    return samples, windows


def test_constant_offset_is_measured_and_corrected():
    samples, windows = _session(lambda x, y: (60.0, -35.0))
    res = evaluate(samples, windows, PPD)
    assert res.offset_px == pytest.approx((-60.0, 35.0), abs=2.0)
    assert res.error_deg == pytest.approx(math.hypot(60, 35) / PPD, abs=0.1)
    assert res.residual_deg < 0.2 and res.ok
    assert "ready" in res.message


def test_error_too_large_is_refused():
    # Not a constant offset: a 15 % scale error around the centre leaves ~4° after correction.
    samples, windows = _session(lambda x, y: (0.15 * (x - 960) * 1.5, 0.15 * (y - 540) * 1.5))
    res = evaluate(samples, windows, PPD, max_error_deg=2.5)
    assert not res.ok and res.residual_deg > 2.5
    assert "too large" in res.message


def test_too_few_targets_seen():
    samples, windows = _session(lambda x, y: (0.0, 0.0), missing=(1, 2, 3))
    res = evaluate(samples, windows, PPD)
    assert not res.ok and "Only 2 of 5" in res.message
    assert res.targets[1].gaze is None


def test_bad_arguments():
    with pytest.raises(ValueError):
        evaluate([], [TargetWindow(0, 0, 0, 1)], 0.0)
    with pytest.raises(ValueError):
        validation_targets(1920, 1080, inset=0.6)
