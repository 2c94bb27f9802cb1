"""Live screen mapping: the fake Neon streams H.264 scene video with the markers; the real
client decodes it, the source detects the markers and maps every gaze sample onto the screen."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest
from neon_helpers import SceneRenderer, collect, pose, screen_image, tracker_config, wait_for
from fake_neon import NEON_SCENE_D, FakeNeon

from appliance.gaze.neon import NeonGazeSource
from appliance.gaze.screen_mapping import INVISIBLE_SCENE_CAMERA, CameraModel, GazeToImageMapper, ScreenMapper

# A half-resolution Neon-like scene camera keeps encoding and detection cheap on 2 cores.
K = np.array([[445.8, 0.0, 406.15], [0.0, 445.6, 299.35], [0.0, 0.0, 1.0]])
CAMERA = CameraModel(K, NEON_SCENE_D.copy(), (800, 600))
H = pose([[110, 120], [690, 100], [705, 465], [95, 450]])  # screen px -> undistorted scene px


def screen_point(index: int) -> tuple[float, float]:
    return 300.0 + 1300.0 * ((index * 0.377) % 1.0), 200.0 + 680.0 * ((index * 0.231) % 1.0)


def gaze_fn(index: int) -> tuple[float, float, bool]:
    ideal = cv2.perspectiveTransform(np.array([[screen_point(index)]]), H).reshape(1, 2)
    x, y = CAMERA.distort_points(ideal)[0]
    return float(x), float(y), True


@pytest.fixture(scope="module")
def scene_neon(corner_markers):
    renderer = SceneRenderer(CAMERA)
    visible = screen_image(corner_markers)
    hidden = visible.copy()
    for m in corner_markers:
        hidden[m.y_px:m.y_px + m.image.shape[0], m.x_px:m.x_px + m.image.shape[1]] = 40
    frames = {name: cv2.cvtColor(renderer.render(img, H), cv2.COLOR_GRAY2BGR)
              for name, img in (("visible", visible), ("hidden", hidden))}
    fake = FakeNeon(gaze_fn=gaze_fn, scene_frames=frames, scene_fps=15.0, camera=(K, NEON_SCENE_D),
                    clock_offset_s=1.5).start()
    yield fake
    fake.stop()


def test_gaze_mapped_onto_the_screen_from_live_scene_video(scene_neon, corner_markers):
    scene_neon.scene_state = "visible"
    screen = ScreenMapper(INVISIBLE_SCENE_CAMERA, corner_markers, max_frame_gap_ns=250_000_000)
    with NeonGazeSource(tracker_config(scene_neon, scene_stream=True), to_image=GazeToImageMapper(screen),
                        frame_sink=screen.add_frame) as source:
        got = collect(source, 400)
        assert screen.located >= 3 and screen.last_marker_ids == (0, 1, 2, 3)
        assert source.status().detail["scene_frames"] >= 3
        assert source.status().detail["screen_found"] is True
        # Then a hand covers the markers: once those frames are in, samples are unmapped.
        scene_neon.scene_state = "hidden"
        n_frames = screen.frames
        assert wait_for(lambda: screen.frames >= n_frames + 4)
        while source.receive(0.0) is not None:
            pass
        hidden = collect(source, 30)
        # The reader's badge says why no gaze lands on the photograph.
        assert wait_for(lambda: source.status().detail["screen_found"] is False)
        scene_neon.scene_state = "visible"
        assert wait_for(lambda: source.status().detail["screen_found"] is True)
    assert np.allclose(screen.camera.camera_matrix, K)  # the device's own calibration was loaded
    # Which sample is which: device time = appliance time + 1.5 s (the fake's clock offset).
    sent_ts = np.array([s.device_ts_ns for s in scene_neon.sent], dtype=np.int64)
    sent_idx = [s.index for s in scene_neon.sent]
    mapped = []
    for g in got:
        k = int(np.argmin(np.abs(sent_ts - (g.timestamp_ns + 1_500_000_000))))
        assert abs(sent_ts[k] - g.timestamp_ns - 1_500_000_000) < 2_500_000
        if math.isfinite(g.x):
            mapped.append((sent_idx[k], g))
    assert len(mapped) > 100
    err = [math.hypot(g.x - screen_point(i)[0], g.y - screen_point(i)[1]) for i, g in mapped]
    print(f"live scene mapping: {len(mapped)} samples, max {max(err):.3f} px, median {np.median(err):.3f} px")
    assert max(err) < 2.0, f"max {max(err):.2f} px, median {np.median(err):.2f} px"
    assert hidden and all(math.isnan(g.x) and math.isnan(g.y) for g in hidden)


def test_tracker_check_reports_markers(scene_neon, config, capsys):
    from appliance.gaze import cli_tracker

    scene_neon.scene_state = "visible"
    cfg = config.replace(tracker={"stall_timeout_s": 0.5, "time_echo_measurements": 5})
    args = type("Args", (), {"ip": "127.0.0.1", "port": scene_neon.http_port, "seconds": 1.0})()
    assert cli_tracker.run_check(args, cfg) == 0
    out = capsys.readouterr().out
    assert "last frame saw ids 0, 1, 2, 3" in out, out


def test_screen_mapping_survives_the_phone_clock_stepping_back(scene_neon, corner_markers):
    """The phone's clock steps back 30 s mid-reading (NTP). Gaze and scene frames both carry
    the new stamps, but the frames were ignored as 'late' until the clock reached the old
    stamps again, so the screen stayed unlocated; the mapping must resume within seconds
    (long before the next time echo, which is an hour away here)."""
    scene_neon.scene_state = "visible"
    screen = ScreenMapper(INVISIBLE_SCENE_CAMERA, corner_markers, max_frame_gap_ns=250_000_000)
    cfg = tracker_config(scene_neon, scene_stream=True, time_echo_interval_s=3600.0)
    try:
        with NeonGazeSource(cfg, to_image=GazeToImageMapper(screen), frame_sink=screen.add_frame) as source:
            assert any(math.isfinite(g.x) for g in collect(source, 200))
            scene_neon.step_clock(-30.0)
            ts_before = time.time_ns()
            stepped = lambda: any(g.timestamp_ns < ts_before - 20e9 for g in collect(source, 20))  # noqa: E731
            assert wait_for(stepped, 5.0), "the step never reached the gaze stamps"
            assert wait_for(lambda: sum(math.isfinite(g.x) for g in collect(source, 20)) >= 15, 5.0), \
                "the screen was not located again after the clock step"
    finally:
        scene_neon.step_clock(30.0)
