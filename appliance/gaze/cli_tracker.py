"""``glanceseg tracker check [--ip IP] [--port P] [--seconds S]``: set up a station's tracker.

For the technician: connects to the Companion (the given address, the configured one, or
mDNS), then prints the device status, the gaze rate actually received, the clock offset to
the appliance, and whether the screen markers are seen in the scene camera.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from appliance.config import Config

# Exit statuses: 0 gaze flows, 1 connected but no gaze / never connected.
EXIT_OK, EXIT_NO_GAZE = 0, 1


def register(subparsers: Any) -> None:
    """Add ``tracker check``."""
    tracker = subparsers.add_parser("tracker", help="eye tracker (Pupil Labs Neon / Invisible) tools")
    sub = tracker.add_subparsers(dest="tracker_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("check", help="connect, print device status, gaze rate, clock offset, markers seen")
    p.add_argument("--ip", default=None, help="Companion address (default: [tracker] ip, else mDNS)")
    p.add_argument("--port", type=int, default=None, help="Companion HTTP port (default: [tracker] port)")
    p.add_argument("--seconds", type=float, default=3.0, help="how long to measure the gaze rate (default 3)")
    p.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace, config: Config) -> int:
    """Connect, measure for ``--seconds``, print a report; 0 when gaze flows."""
    from appliance.gaze.neon import NeonGazeSource  # needs pupil-labs-realtime-api
    from appliance.gaze.screen_mapping import (
        INVISIBLE_SCENE_CAMERA,
        GazeToImageMapper,
        ScreenMapper,
        screen_markers,
    )

    cfg = config.tracker
    overrides = {k: v for k, v in (("ip", args.ip), ("port", args.port)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    display = config.display
    markers = screen_markers(display.width_px, display.height_px, cfg.marker_size_px, cfg.marker_margin_px)
    screen = ScreenMapper(INVISIBLE_SCENE_CAMERA, markers, max_frame_gap_ns=int(cfg.max_frame_gap_ms * 1e6))
    to_screen = GazeToImageMapper(screen)  # no viewer: screen px are what a technician checks
    where = f"{cfg.ip}:{cfg.port}" if cfg.ip else "mDNS discovery"
    print(f"Connecting to the Companion ({where}) ...")
    with NeonGazeSource(cfg, to_image=to_screen, frame_sink=screen.add_frame) as source:
        deadline = time.monotonic() + cfg.discover_timeout_s + cfg.request_timeout_s * 4
        while not source.status().connected and time.monotonic() < deadline:
            time.sleep(0.1)
        if not source.status().connected:
            error = source.status().detail.get("last_error") or "no answer"
            print(f"Not connected: nothing answered at {where}. Check that the Neon Companion app is open "
                  "with the glasses plugged in, that the phone is on this appliance's network, and that "
                  "[tracker] ip and port are those the app shows (or empty, to find it by mDNS).")
            print(f"  (technical detail: {error})")
            return EXIT_NO_GAZE
        n = worn = 0
        t_end = time.monotonic() + max(0.5, args.seconds)
        while time.monotonic() < t_end:
            sample = source.receive(0.2)
            if sample is not None:
                n += 1
                worn += sample.worn
        d = source.status().detail
    _print_report(d, n, worn, args.seconds, screen)
    return EXIT_OK if n > 0 else EXIT_NO_GAZE


def _print_report(d: dict, n: int, worn: int, seconds: float, screen: Any) -> None:
    def fmt(value: Any, unit: str = "") -> str:
        return "unknown" if value is None else f"{value}{unit}"

    storage = None if d.get("memory_bytes") is None else f"{d['memory_bytes'] / 1e9:.1f} GB"
    print(f"Device:        {d.get('device_name') or 'unknown'} ({d.get('hardware_version') or 'unknown'}) "
          f"at {d.get('address')}")
    print(f"Battery:       {fmt(d.get('battery_level'), ' %')} ({d.get('battery_state') or '-'})")
    print(f"Storage free:  {fmt(storage)} ({d.get('memory_state') or '-'})")
    rtt = d.get("clock_rtt_ms")
    print(f"Clock offset:  {d['clock_offset_ns'] / 1e6:+.1f} ms (appliance - device; "
          f"round trip {fmt(rtt, ' ms')})")
    print(f"Gaze rate:     {d.get('gaze_rate_hz', 0.0):.1f} Hz ({n} samples in {seconds:.1f} s, "
          f"worn {100.0 * worn / n if n else 0.0:.0f} %)")
    frames, located = screen.frames, screen.located
    if frames == 0:
        print("Markers:       no scene video received (enable [tracker] scene_stream)")
    else:
        ids = ", ".join(str(i) for i in screen.last_marker_ids) or "none"
        print(f"Markers:       screen located in {located} of {frames} frames; last frame saw ids {ids}")
    print(f"Recording:     {'running' if d.get('recording_id') else 'not running'}")
    if d.get("last_error"):
        print(f"Last error:    {d['last_error']}")
