"""Full-jitter exponential backoff."""

from __future__ import annotations

import random

from appliance.sync.engine import backoff_delay_s


def test_full_jitter_bounds_and_growth():
    rng = random.Random(0)
    for attempts in range(0, 20):
        ceiling = min(3600.0, 5.0 * 2 ** attempts)
        draws = [backoff_delay_s(attempts, 5.0, 3600.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.5 * ceiling  # spread over the whole interval, not a fixed delay
        assert min(draws) < 0.5 * ceiling
    assert backoff_delay_s(10_000, 5.0, 60.0, rng) <= 60.0
