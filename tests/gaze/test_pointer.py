"""Pointer positions as a stand-in for gaze."""

from __future__ import annotations

import math
import threading

import pytest

from appliance.gaze.geometry import ViewTransform
from appliance.gaze.pointer import PointerSource

SPD = 50.0  # screen px per degree


def source(maxlen: int = 100_000) -> PointerSource:
    return PointerSource(ViewTransform(2000, 1000, 1000, 500), SPD, maxlen=maxlen)


def test_push_maps_screen_to_image() -> None:
    src = source()
    src.push(500.0, 250.0, timestamp_ns=7)
    s = src.receive(0)
    assert s is not None and s.timestamp_ns == 7
    assert (s.x, s.y) == pytest.approx((1000.0, 500.0))
    assert s.px_per_deg == pytest.approx(SPD * 2)  # fit scale 0.5 screen px per image px


def test_zoom_applies_to_later_pushes() -> None:
    src = source()
    src.push(0.0, 0.0, timestamp_ns=1)
    src.set_view(src.view.with_zoom(2.0))
    src.push(0.0, 0.0, timestamp_ns=2)
    a, b = src.receive(0), src.receive(0)
    assert (a.x, a.y) == pytest.approx((0.0, 0.0))
    assert (b.x, b.y) == pytest.approx((500.0, 250.0))
    assert b.px_per_deg == pytest.approx(a.px_per_deg / 2)


def test_off_screen_lift_and_garbage_give_no_gaze() -> None:
    src = source()
    src.push(-1.0, 10.0, timestamp_ns=1)
    src.lift(timestamp_ns=2)
    src.push("left", None, timestamp_ns=3)  # type: ignore[arg-type]
    got = [src.receive(0) for _ in range(3)]
    assert all(math.isnan(s.x) and not s.has_gaze for s in got)


def test_threads_push_concurrently_nothing_lost() -> None:
    src = source()
    n_threads, n_each = 4, 500

    def pusher(k: int) -> None:
        for i in range(n_each):
            src.push(float(k), float(i), timestamp_ns=k * 10_000 + i)

    threads = [threading.Thread(target=pusher, args=(k,), name=f"pusher-{k}") for k in range(n_threads)]
    for t in threads:
        t.start()
    got = []
    while len(got) < n_threads * n_each:
        s = src.receive(timeout_s=5.0)
        assert s is not None
        got.append(s)
    for t in threads:
        t.join()
    for k in range(n_threads):  # each thread's order is kept
        ts = [s.timestamp_ns for s in got if s.timestamp_ns // 10_000 == k]
        assert ts == sorted(ts) and len(ts) == n_each
    assert src.status().detail["pushed"] == n_threads * n_each


def test_bounded_queue_drops_oldest() -> None:
    src = source(maxlen=10)
    for i in range(15):
        src.push(1.0, 1.0, timestamp_ns=i)
    assert src.dropped == 5
    assert [src.receive(0).timestamp_ns for _ in range(10)] == list(range(5, 15))
    assert src.receive(timeout_s=0.01) is None


def test_close_wakes_a_waiting_consumer() -> None:
    src = source()
    result: list = []
    waiter = threading.Thread(target=lambda: result.append(src.receive(None)), name="waiter")
    waiter.start()
    src.close()
    waiter.join(timeout=5.0)
    assert not waiter.is_alive() and result == [None]
    src.push(1.0, 1.0)  # ignored after close, no error
    assert src.receive(0) is None
