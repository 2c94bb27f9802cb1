"""Measure, through the fake Neon in its own process and the real Pupil Labs client:

- gaze sample -> image-pixel latency: from the fake's ``sendto`` of a gaze datum to the
  moment ``NeonGazeSource.receive`` returns it mapped to image px (marker homography at 30 Hz,
  lens undistortion, the viewer's screen -> image transform);
- reconnect time after a stall: from the last sample received before the stream froze to the
  first sample of the new session, with ``[tracker] stall_timeout_s`` as configured.

Run: ``.venv/bin/python tests/gaze/bench_neon.py [--seconds 5] [--stall-timeout 2.0] [--scene]``;
prints JSON. ``--scene`` adds the 30 Hz 1600x1200 H.264 scene stream: decoded by the client in
the same event loop and searched for markers in a worker thread, as on the appliance.
Not a test (no timing assertions); the numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fake_neon import NEON_SCENE_D, NEON_SCENE_K  # noqa: E402

from appliance.config import DisplayConfig, TrackerConfig  # noqa: E402
from appliance.gaze.geometry import ViewTransform  # noqa: E402
from appliance.gaze.neon import NeonGazeSource  # noqa: E402
from appliance.gaze.screen_mapping import (  # noqa: E402
    CameraModel,
    GazeToImageMapper,
    ScreenMapper,
    screen_markers,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--stall-timeout", type=float, default=TrackerConfig().stall_timeout_s)
    ap.add_argument("--scene", action="store_true", help="stream scene video and detect markers live")
    args = ap.parse_args()
    cmd = [sys.executable, str(HERE / "fake_neon.py"), "serve"] + (["scene"] if args.scene else [])
    fake = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert fake.stdin is not None and fake.stdout is not None
    ports = json.loads(fake.stdout.readline())
    camera = CameraModel(NEON_SCENE_K, NEON_SCENE_D, (1600, 1200))
    screen = ScreenMapper(camera, screen_markers(1920, 1080))
    h = np.array([[2.4, 0.05, -900.0], [-0.03, 2.4, -700.0], [1e-5, 2e-5, 1.0]])
    stop = threading.Event()

    def frames() -> None:  # a located scene frame every 33 ms, as marker detection would give
        while not stop.is_set():
            screen.add_homography(time.time_ns(), h)
            time.sleep(1 / 30)

    if not args.scene:
        threading.Thread(target=frames, name="bench-frames", daemon=True).start()
    view = ViewTransform.fitted(4288, 2848, DisplayConfig())
    to_image = GazeToImageMapper(screen, view=view, screen_px_per_deg=45.0)
    cfg = TrackerConfig(ip="127.0.0.1", port=ports["http_port"], stall_timeout_s=args.stall_timeout)
    mapped = 0
    received: list[int] = []
    sink = screen.add_frame if args.scene else None
    with NeonGazeSource(cfg, to_image=to_image, frame_sink=sink) as source:
        t_end = time.monotonic() + args.seconds + 1.0
        while time.monotonic() < t_end:
            sample = source.receive(0.5)
            if sample is not None:
                received.append(time.time_ns())
                mapped += sample.x == sample.x
        n_before = len(received)
        fake.stdin.write("stall\n")
        fake.stdin.flush()
        json.loads(fake.stdout.readline())
        t_end = time.monotonic() + args.stall_timeout + 5.0
        while time.monotonic() < t_end and len(received) < n_before + 50:
            if source.receive(0.5) is not None:
                received.append(time.time_ns())
        status = source.status().detail
    stop.set()
    fake.stdin.write("quit\n")
    fake.stdin.flush()
    sent = None
    for line in fake.stdout:
        msg = json.loads(line)
        if "sent" in msg:
            sent = msg["sent"]
    fake.wait(10)
    assert sent is not None
    # Before the stall the i-th sample received is the i-th sent (none lost: see test_neon.py).
    skip = 200  # the first second: connection set-up and warm-up
    lat = np.array([received[i] - sent[i][1] for i in range(skip, n_before)]) / 1e6
    # Samples in flight when the stall began still arrive: the reconnect is the largest gap.
    tail = np.diff(np.array(received[n_before - 1:], dtype=np.int64))
    gap_ms = float(tail.max()) / 1e6 if len(tail) else None
    print(json.dumps({
        "samples_measured": int(len(lat)),
        "latency_ms_median": round(float(np.median(lat)), 3),
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 3),
        "latency_ms_max": round(float(lat.max()), 3),
        "stall_timeout_s": args.stall_timeout,
        "reconnect_gap_ms": None if gap_ms is None else round(gap_ms, 1),
        "reconnect_after_detection_ms": None if gap_ms is None else round(gap_ms - 1e3 * args.stall_timeout, 1),
        "scene": args.scene, "scene_frames": status["scene_frames"],
        "scene_frames_skipped": status["scene_frames_skipped"], "screen_located_frames": screen.located,
        "samples_mapped_before_stall": mapped,
        "stalls": status["stalls"], "reconnects": status["reconnects"], "dropped": status["dropped"],
    }, indent=1))


if __name__ == "__main__":
    main()
