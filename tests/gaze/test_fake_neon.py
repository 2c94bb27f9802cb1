"""The fake Neon is faithful: the real ``pupil_labs.realtime_api`` client talks to it unchanged."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest
from pupil_labs.realtime_api import Device, receive_gaze_data
from pupil_labs.realtime_api.models import Phone
from pupil_labs.realtime_api.time_echo import TimeOffsetEstimator


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_status_is_parsed_by_the_client(fake_neon):
    async def go():
        async with Device("127.0.0.1", fake_neon.http_port) as device:
            return await device.get_status()

    status = _run(go())
    assert status.phone.battery_level == 87 and status.phone.memory_state == "OK"
    assert status.phone.time_echo_port == fake_neon.echo_port
    assert status.hardware.version == "2"
    assert status.direct_gaze_sensor().url == f"rtsp://127.0.0.1:{fake_neon.rtsp_port}/?camera=gaze"
    assert status.direct_eye_events_sensor().connected
    assert status.recording is None


def test_websocket_pushes_status_changes(fake_neon):
    async def go():
        async with Device("127.0.0.1", fake_neon.http_port) as device:
            updates = device.status_updates()
            first = [await updates.__anext__() for _ in range(5)]  # the full status on connect
            await asyncio.get_running_loop().run_in_executor(None, fake_neon.set_battery, 12)
            pushed = await updates.__anext__()
            await updates.aclose()
            return first, pushed

    first, pushed = _run(go())
    assert isinstance(first[0], Phone)
    assert isinstance(pushed, Phone) and pushed.battery_level == 12 and pushed.battery_state == "LOW"


def test_gaze_stream_matches_what_was_sent_from_the_first_packet(fake_neon):
    async def go():
        got = []
        url = f"rtsp://127.0.0.1:{fake_neon.rtsp_port}/?camera=gaze"
        async for datum in receive_gaze_data(url, log_level=30):
            got.append(datum)
            if len(got) == 60:
                break
        return got

    got = _run(go())
    sent = fake_neon.sent[:60]
    # The client drops RTP before the first sender report: the fake sends one at PLAY.
    # RTP time has 90 kHz ticks (11 us): timestamps agree to that resolution.
    got_ns = np.array([g.timestamp_unix_ns for g in got], dtype=np.int64)
    sent_ns = np.array([s.device_ts_ns for s in sent], dtype=np.int64)
    assert np.abs(got_ns - sent_ns).max() < 20_000
    assert [(g.x, g.y, g.worn) for g in got] == [(s.x, s.y, s.worn) for s in sent]
    steps = np.diff([g.timestamp_unix_ns for g in got])
    assert np.allclose(steps, 5_000_000, atol=20_000)  # 200 Hz


def test_time_echo_estimates_the_device_clock(fake_neon):
    est = _run(TimeOffsetEstimator("127.0.0.1", fake_neon.echo_port).estimate(number_of_measurements=10))
    assert est is not None
    assert est.time_offset_ms.median == pytest.approx(-3250, abs=2)


def test_recording_and_events(fake_neon):
    async def go():
        async with Device("127.0.0.1", fake_neon.http_port) as device:
            rec_id = await device.recording_start()
            event = await device.send_event("image_shown", event_timestamp_unix_ns=123)
            await device.recording_stop_and_save()
            calib = await device.get_calibration()
            return rec_id, event, calib

    rec_id, event, calib = _run(go())
    assert event.recording_id == rec_id and event.timestamp == 123
    assert fake_neon.events == [{"name": "image_shown", "timestamp": 123, "recording_id": rec_id}]
    assert fake_neon.recording_id is None
    assert np.asarray(calib.scene_camera_matrix)[0, 0] > 0


def test_offline_refuses_and_comes_back_on_the_same_port(fake_neon):
    port = fake_neon.http_port
    fake_neon.go_offline()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    fake_neon.come_back()
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert fake_neon.http_port == port
