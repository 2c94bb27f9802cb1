"""The Neon session's side streams: device fixation events and scene video.

Both are optional for reading (the appliance detects fixations itself; scene video is only
needed for marker-based screen mapping), so their failures are logged and retried without
ending the gaze session (see ``NeonGazeSource._retrying``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from pupil_labs.realtime_api.streaming import RTSPEyeEventStreamer, RTSPVideoFrameStreamer

from appliance.gaze.neon_state import NeonState

logger = logging.getLogger(__name__)

FrameSink = Callable[[int, Any], None]
"""(timestamp_ns in the appliance clock, grey uint8 H×W scene frame) -> None."""


@dataclass(frozen=True)
class DeviceFixation:
    """A fixation reported by the Companion app (Neon, Companion >= 2.9).

    ``start_ns``/``end_ns`` are in the appliance clock; ``x``/``y`` the mean gaze mapped to
    image px (NaN when the screen was not located); ``scene_x``/``scene_y`` in scene px.
    """

    start_ns: int
    end_ns: int
    x: float
    y: float
    scene_x: float
    scene_y: float


async def stream_fixations(url: str, timeout_s: float, offset_ns: Callable[[], int],
                           to_image: Optional[Callable[..., Any]],
                           out: "queue.Queue[DeviceFixation]") -> None:
    """Receive the Companion's fixation events into ``out`` (oldest dropped when full)."""
    async with RTSPEyeEventStreamer(url, timeout=timeout_s, log_level=logging.WARNING) as streamer:
        async for event in streamer.receive():
            if getattr(event, "event_type", None) != 1 or not hasattr(event, "mean_gaze_x"):
                continue  # saccades, onsets and blinks are not used
            offset = offset_ns()
            start, end = event.start_time_ns + offset, event.end_time_ns + offset
            ix = iy = float("nan")
            if to_image is not None:
                mapped = to_image((start + end) // 2, event.mean_gaze_x, event.mean_gaze_y)
                if mapped is not None:
                    ix, iy = float(mapped[0]), float(mapped[1])
            fixation = DeviceFixation(start, end, ix, iy, event.mean_gaze_x, event.mean_gaze_y)
            try:
                out.put_nowait(fixation)
            except queue.Full:
                out.get_nowait()
                out.put_nowait(fixation)


async def stream_scene(url: str, timeout_s: float, sink: FrameSink, state: NeonState,
                       lock: threading.Lock) -> None:
    """Decode scene frames and hand the newest to ``sink`` in a worker thread.

    Marker detection must not hold up the gaze stream, and a backlog of stale frames is
    worse than a skipped one: a frame arriving while the previous one is still being
    processed is skipped (counted in ``state.scene_frames_skipped``).
    """
    loop = asyncio.get_running_loop()
    busy: Optional[asyncio.Future] = None
    try:
        async with RTSPVideoFrameStreamer(url, timeout=timeout_s, log_level=logging.WARNING) as streamer:
            async for frame in streamer.receive():
                with lock:
                    ts = frame.timestamp_unix_ns + state.clock_offset_ns
                    state.scene_frames += 1
                    if busy is not None and not busy.done():
                        state.scene_frames_skipped += 1
                        continue
                busy = loop.run_in_executor(None, _grey_to_sink, sink, ts, frame.av_frame)
    finally:
        if busy is not None:
            await asyncio.gather(busy, return_exceptions=True)


def _grey_to_sink(sink: FrameSink, timestamp_ns: int, av_frame: Any) -> None:
    """Worker thread: the luma plane is all marker detection needs (no BGR conversion)."""
    sink(timestamp_ns, av_frame.to_ndarray(format="gray"))
