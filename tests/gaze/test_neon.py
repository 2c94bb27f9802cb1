"""The Neon gaze source, through the real Pupil Labs client, against the fake device."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from neon_helpers import collect, tracker_config, wait_for

from appliance.gaze.neon import NeonGazeSource
from appliance.gaze.screen_mapping import GazeToImageMapper, ScreenMapper

OFFSET_NS = -3_250_000_000  # appliance clock minus the fake's clock


def identity(t, x, y):
    return x, y


def test_every_sample_arrives_in_order_at_the_rate_sent_in_appliance_time(fake_neon):
    with NeonGazeSource(tracker_config(fake_neon), to_image=identity) as source:
        got = collect(source, 300)
        status = source.status()
    assert len(got) == 300
    sent = fake_neon.sent[:300]
    assert [(g.x, g.y) for g in got] == [(s.x, s.y) for s in sent]  # none lost, none reordered
    ts = np.array([g.timestamp_ns for g in got], dtype=np.int64)
    assert np.all(np.diff(ts) > 0)
    dev = np.array([s.device_ts_ns for s in sent], dtype=np.int64)
    # Clock offset from the time echo (ms resolution) applied to device timestamps.
    assert np.abs(ts - dev - OFFSET_NS).max() < 2_500_000
    assert status.detail["clock_offset_ns"] == pytest.approx(OFFSET_NS, abs=2_000_000)
    assert status.detail["gaze_rate_hz"] == pytest.approx(200.0, rel=0.01)
    assert status.connected and status.detail["battery_level"] == 87
    assert status.detail["memory_bytes"] == fake_neon.memory
    assert status.detail["hardware_version"] == "Neon"


def test_other_clock_offset_applies():
    from fake_neon import FakeNeon

    fake = FakeNeon(clock_offset_s=-7.0).start()
    try:
        with NeonGazeSource(tracker_config(fake), to_image=identity) as source:
            got = collect(source, 20)
    finally:
        fake.stop()
    dev = np.array([s.device_ts_ns for s in fake.sent[:20]], dtype=np.int64)
    ts = np.array([g.timestamp_ns for g in got], dtype=np.int64)
    assert np.abs(ts - dev - 7_000_000_000).max() < 2_500_000


def test_stalled_stream_is_detected_and_reconnected(fake_neon):
    with NeonGazeSource(tracker_config(fake_neon), to_image=identity) as source:
        before = collect(source, 50)
        fake_neon.stall()
        after = []
        assert wait_for(lambda: source.status().detail["stalls"] >= 1)
        after = collect(source, 50)
        status = source.status()
    assert len(before) == 50 and len(after) == 50
    assert status.detail["reconnects"] >= 1 and status.connected
    ts = [s.timestamp_ns for s in before + after]
    assert all(b > a for a, b in zip(ts, ts[1:]))
    # The new session's samples are contiguous (200 Hz) once it streams again.
    assert np.allclose(np.diff(ts[-40:]), 5_000_000, atol=100_000)


def test_dropped_connections_are_rebuilt(fake_neon):
    with NeonGazeSource(tracker_config(fake_neon), to_image=identity) as source:
        assert len(collect(source, 20)) == 20
        fake_neon.drop_connections()
        assert wait_for(lambda: source.status().detail["reconnects"] >= 1)
        got = collect(source, 40)
    assert len(got) == 40
    ts = [g.timestamp_ns for g in got]
    assert ts == sorted(ts)


def test_device_going_offline_and_coming_back(fake_neon):
    with NeonGazeSource(tracker_config(fake_neon), to_image=identity) as source:
        assert len(collect(source, 20)) == 20
        fake_neon.go_offline()
        assert wait_for(lambda: not source.status().connected)
        while source.receive(0.0) is not None:
            pass
        fake_neon.come_back()
        assert len(collect(source, 20)) == 20
        assert source.status().connected


def test_unmapped_gaze_is_nan_not_scene_pixels(fake_neon):
    with NeonGazeSource(tracker_config(fake_neon)) as source:
        got = collect(source, 5)
    assert got and all(math.isnan(s.x) and math.isnan(s.y) and not s.has_gaze for s in got)


def test_full_queue_keeps_the_newest(fake_neon):
    with NeonGazeSource(tracker_config(fake_neon, queue_size=10), to_image=identity) as source:
        assert wait_for(lambda: source.status().detail["dropped"] > 0)
        got = collect(source, 10)
    ts = [s.timestamp_ns for s in got]
    assert ts == sorted(ts)


def test_the_devices_fixation_events_are_not_streamed_unless_asked_for(fake_neon):
    """The pipeline detects its own fixations: by default the appliance opens no eye-events
    stream on the phone (one RTSP connection fewer on both ends)."""
    with NeonGazeSource(tracker_config(fake_neon), to_image=identity) as source:
        assert len(collect(source, 100)) == 100  # gaze flows
        assert source.receive_fixation(timeout_s=1.5) is None


def test_fixation_events_are_delivered_in_appliance_time(fake_neon):
    with NeonGazeSource(tracker_config(fake_neon, fixation_events=True), to_image=identity) as source:
        fixation = source.receive_fixation(timeout_s=5.0)
    assert fixation is not None
    assert fixation.end_ns > fixation.start_ns
    assert abs(fixation.end_ns - time.time_ns()) < 5_000_000_000  # in the host clock, not 3 s off
    assert (fixation.x, fixation.y) == (fixation.scene_x, fixation.scene_y)


def test_recording_hooks_are_off_by_default(fake_neon):
    from appliance.gaze.neon_recording import NeonRecording

    with NeonGazeSource(tracker_config(fake_neon), to_image=identity) as source:
        collect(source, 5)
        hooks = NeonRecording(source)
        assert hooks.start() is None
        assert hooks.event("image_shown", "17") is False
        hooks.stop()
    assert fake_neon.events == [] and fake_neon.recording_id is None


def test_recording_hooks_when_enabled(fake_neon):
    from appliance.gaze.neon_recording import NeonRecording

    with NeonGazeSource(tracker_config(fake_neon, recording_enabled=True), to_image=identity) as source:
        collect(source, 5)
        hooks = NeonRecording(source)
        rec_id = hooks.start()
        assert fake_neon.recording_id == rec_id
        t = time.time_ns()
        assert hooks.event("lesion_accepted", "3", timestamp_ns=t)
        hooks.stop()
        with pytest.raises(ValueError):
            hooks.event("patient 1234")
        with pytest.raises(ValueError):
            hooks.event("image_shown", "Jane Doe")
    assert rec_id and fake_neon.events[0]["name"] == "lesion_accepted:3"
    assert fake_neon.events[0]["recording_id"] == rec_id
    assert fake_neon.recording_id is None
    # Sent in the device clock so the Companion's export lines up with the gaze.
    assert fake_neon.events[0]["timestamp"] == pytest.approx(t - OFFSET_NS, abs=2_500_000)


def test_recording_refused_by_the_device_raises(fake_neon):
    from appliance.errors import GazeError
    from appliance.gaze.neon_recording import NeonRecording

    with NeonGazeSource(tracker_config(fake_neon, recording_enabled=True), to_image=identity) as source:
        collect(source, 5)
        NeonRecording(source).start()
        with pytest.raises(GazeError, match="Recording running"):
            NeonRecording(source).start()


def test_battery_update_reaches_status(fake_neon):
    with NeonGazeSource(tracker_config(fake_neon), to_image=identity) as source:
        collect(source, 5)
        fake_neon.set_battery(9)
        assert wait_for(lambda: source.status().detail["battery_level"] == 9)
        assert source.status().detail["battery_state"] == "LOW"


def test_gaze_to_image_pixels_through_the_device(fake_neon, neon_camera):
    """Scene px -> screen px (homography) -> image px (viewer transform), end to end."""
    from appliance.gaze.screen_mapping import INVISIBLE_SCENE_CAMERA

    # Starts with the wrong camera: the source must load the device's /calibration.bin.
    screen = ScreenMapper(INVISIBLE_SCENE_CAMERA, [], max_frame_gap_ns=10**12)
    h = np.array([[1.2, 0.0, -100.0], [0.0, 1.2, -50.0], [0.0, 0.0, 1.0]])
    screen.add_homography(time.time_ns(), h)
    to_image = GazeToImageMapper(screen, view=lambda x, y: (x * 2.0, y * 2.0))
    with NeonGazeSource(tracker_config(fake_neon), to_image=to_image) as source:
        got = collect(source, 20)
    sent = fake_neon.sent[:20]
    assert np.allclose(screen.camera.camera_matrix, neon_camera.camera_matrix)
    for g, s in zip(got, sent):
        u = neon_camera.undistort_points(np.array([[s.x, s.y]]))[0]
        expect = (2 * (1.2 * u[0] - 100), 2 * (1.2 * u[1] - 50))
        assert (g.x, g.y) == pytest.approx(expect, abs=1e-3)


def test_tracker_check_command(fake_neon, config, capsys):
    from appliance.gaze import cli_tracker

    cfg = config.replace(tracker={"stall_timeout_s": 0.5, "time_echo_measurements": 5})
    args = type("Args", (), {"ip": "127.0.0.1", "port": fake_neon.http_port, "seconds": 0.5})()
    assert cli_tracker.run_check(args, cfg) == 0
    out = capsys.readouterr().out
    assert "Fake Neon (Neon)" in out and "87 %" in out and "64.0 GB" in out
    assert "Clock offset:  -3250" in out or "Clock offset:  -3249" in out or "Clock offset:  -3251" in out
    assert "Gaze rate:     200" in out or "Gaze rate:     199" in out


def test_tracker_check_without_a_device(config, capsys):
    from appliance.gaze import cli_tracker

    cfg = config.replace(tracker={"request_timeout_s": 0.3, "discover_timeout_s": 0.2,
                                  "reconnect_initial_s": 0.1})
    args = type("Args", (), {"ip": "127.0.0.1", "port": 9, "seconds": 0.2})()
    assert cli_tracker.run_check(args, cfg) == 1
    out = capsys.readouterr().out
    assert "Not connected: nothing answered at 127.0.0.1:9" in out and "Companion app is open" in out


def test_discovery_by_mdns(fake_neon):
    from appliance.gaze.neon import discover

    fake_neon.advertise()
    found = discover(1.0)
    assert any(d.port == fake_neon.http_port and "127.0.0.1" in d.addresses for d in found)
    with NeonGazeSource(tracker_config(fake_neon, ip="", discover_timeout_s=5.0), to_image=identity) as source:
        assert len(collect(source, 10)) == 10
        assert source.status().detail["address"] == f"127.0.0.1:{fake_neon.http_port}"


def test_repeated_samples_are_dropped_and_clock_steps_passed_on():
    from appliance.config import TrackerConfig

    source = NeonGazeSource(TrackerConfig(ip="127.0.0.1"), to_image=identity, start=False)
    base = 1_800_000_000_000_000_000
    for dev in (base, base + 5_000_000, base + 5_000_000, base + 2_000_000, base - 3_000_000_000):
        source._on_gaze(dev, 1.0, 2.0, True)
    got = [source.receive(0.0) for _ in range(3)]
    assert source.receive(0.0) is None
    assert [g.timestamp_ns for g in got] == [base, base + 5_000_000, base - 3_000_000_000]
    assert source.status().detail["out_of_order"] == 2
    source.close()


def test_dual_monocular_payloads_and_invisible_camera():
    """Invisible (hardware 1) gets the published default intrinsics; a Companion streaming
    dual-monocular gaze (17-byte payloads) gives the mean of both eyes."""
    from fake_neon import NEON_SCENE_D, NEON_SCENE_K, FakeNeon

    from appliance.gaze.screen_mapping import INVISIBLE_SCENE_CAMERA, CameraModel

    fake = FakeNeon(hardware_version="1", fixation_every=0)
    fake.dual_monocular = True
    fake.start()
    try:
        screen = ScreenMapper(CameraModel(NEON_SCENE_K, NEON_SCENE_D, (1600, 1200)), [], max_frame_gap_ns=10**12)
        screen.add_homography(time.time_ns(), np.eye(3))
        with NeonGazeSource(tracker_config(fake), to_image=identity) as source:
            got = collect(source, 10)
        with NeonGazeSource(tracker_config(fake), to_image=GazeToImageMapper(screen)) as source:
            collect(source, 1)
    finally:
        fake.stop()
    assert [(g.x, g.y) for g in got] == [(s.x, s.y) for s in fake.sent[:10]]
    assert screen.camera is INVISIBLE_SCENE_CAMERA


def test_a_re_estimated_clock_offset_is_passed_on_not_squeezed():
    """The time echo fails at connect (offset 0 kept) and works a moment later: the offset then
    moves every stamp 3.25 s back. Clamping them to stay increasing stamped 3.25 s of gaze
    1 ns apart (no fixation can last 100 ms, the scene frame matched is a stale one); the step
    must be passed on and every later sample stamped device time + the new offset."""
    from fake_neon import FakeNeon

    fake = FakeNeon(clock_offset_s=3.25, fixation_every=0).start()
    fake.echo_offline()
    try:
        with NeonGazeSource(tracker_config(fake, time_echo_interval_s=0.3), to_image=identity) as source:
            assert len(collect(source, 40)) == 40
            assert source.clock_offset_ns == 0
            fake.echo_back()
            assert wait_for(lambda: source.clock_offset_ns != 0)
            while source.receive(0.0) is not None:
                pass
            got = collect(source, 200)
    finally:
        fake.stop()
    assert source.clock_offset_ns == pytest.approx(OFFSET_NS, abs=2_000_000)
    sent = {(s.x, s.y): s.device_ts_ns for s in fake.sent}
    err = np.array([g.timestamp_ns - sent[(g.x, g.y)] - OFFSET_NS for g in got])
    assert len(got) == 200 and np.abs(err).max() < 2_500_000, np.abs(err).max()


def test_a_broken_time_echo_neither_stops_gaze_nor_later_re_estimates():
    """The Companion's time-echo port accepts and hangs up (the library then raises
    ValueError): gaze must flow with the offset kept, as when the port refuses, and the
    periodic re-estimate must survive the failures and pick the offset up once echo works.
    Before, every session ended at the echo (no gaze at all), and one failed periodic echo
    ended the re-estimates for the rest of the session."""
    from fake_neon import FakeNeon

    fake = FakeNeon(clock_offset_s=3.25, fixation_every=0).start()
    fake.echo_hangs_up = True
    try:
        with NeonGazeSource(tracker_config(fake, time_echo_interval_s=0.2), to_image=identity) as source:
            assert len(collect(source, 40, timeout_s=5.0)) == 40, source.status().detail["last_error"]
            assert source.clock_offset_ns == 0
            n_before = source.status().detail["samples"]
            assert wait_for(lambda: source.status().detail["samples"] > n_before + 100)  # periodic echoes failed
            fake.echo_hangs_up = False
            assert wait_for(lambda: source.clock_offset_ns != 0)
            assert source.status().detail["reconnects"] == 0
    finally:
        fake.stop()
    assert source.clock_offset_ns == pytest.approx(OFFSET_NS, abs=2_000_000)


def test_a_locked_phone_never_reads_connected():
    """The phone is locked: the Companion answers its status but streams no gaze. Every
    reconnect attempt used to mark the tracker connected until its stall timeout, so the
    reader's badge (polled every 5 s) showed it connected at random while no gaze came.
    Connected must mean gaze flowing, and come back with the gaze."""
    from fake_neon import FakeNeon

    fake = FakeNeon(fixation_every=0)
    fake.stall_new_sessions = True
    fake.start()
    try:
        with NeonGazeSource(tracker_config(fake), to_image=identity) as source:
            seen, deadline = set(), time.monotonic() + 3.0
            while time.monotonic() < deadline:
                seen.add(source.status().connected)
                time.sleep(0.01)
            assert source.status().detail["reconnects"] >= 2  # sessions were set up and stalled
            assert seen == {False}
            fake.stall_new_sessions = False
            assert wait_for(lambda: source.status().connected)
            assert source.receive(1.0) is not None
    finally:
        fake.stop()


def test_close_does_not_wait_for_a_companion_that_answers_nothing():
    """The phone is out of Wi-Fi range: connections hang, nothing is refused. close() (run by
    the request that opens the next photograph) waited for the status request to time out,
    and gave up after 5 s with the thread still running; it must end the session at once."""
    from fake_neon import FakeNeon

    fake = FakeNeon(fixation_every=0).start()
    fake.freeze()
    try:
        source = NeonGazeSource(tracker_config(fake, request_timeout_s=30.0), to_image=identity)
        time.sleep(0.3)  # the status request is sent and hangs
        source.close()
        assert not source._thread.is_alive()
        assert not source.status().connected
    finally:
        fake.thaw()
        fake.stop()


def test_status_says_whether_the_glasses_are_worn():
    """Glasses left on the desk stream samples marked not worn, which give no fixation; the
    status says so (the reader's badge shows it) and says it again once they are put on."""
    from fake_neon import FakeNeon, default_gaze

    on_face = {"worn": False}

    def gaze(index: int) -> tuple[float, float, bool]:
        x, y, _ = default_gaze(index)
        return x, y, on_face["worn"]

    fake = FakeNeon(gaze_fn=gaze, fixation_every=0).start()
    try:
        with NeonGazeSource(tracker_config(fake), to_image=identity) as source:
            assert wait_for(lambda: source.status().connected)
            assert wait_for(lambda: source.status().detail["worn"] is False)
            on_face["worn"] = True
            assert wait_for(lambda: source.status().detail["worn"] is True)
    finally:
        fake.stop()
