"""Pupil Labs Neon / Invisible gaze source over the real-time API's *async* client.

Why the async API: the library's simple API keeps only the newest sample per stream
(``deque(maxlen=1)``), and fixation detection needs every sample. So this module runs the
async client in one named background thread with its own event loop and pushes every gaze
datum into a bounded queue that the pipeline drains with :meth:`NeonGazeSource.receive`.

A session: find the Companion (fixed IP/port, or mDNS), read its status, estimate the clock
offset with the time-echo protocol (so sample timestamps land in the appliance's clock),
then run the gaze stream, the status websocket, the periodic clock re-estimate, optional
fixation events and scene video, and a watchdog. A silent gaze stream (no datum for
``stall_timeout_s``) or a closed connection ends the session; a session that delivered gaze
is rebuilt at once, an unreachable device is retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import queue
import threading
import time
from typing import Any, Callable, Coroutine, Optional

import aiohttp
from aiortsp.rtsp.errors import RTSPError
from pupil_labs.realtime_api import Device, Network
from pupil_labs.realtime_api.device import DeviceError
from pupil_labs.realtime_api.models import APIPath, Phone, Status
from pupil_labs.realtime_api.streaming import (
    RTSPGazeStreamer,
)
from pupil_labs.realtime_api.time_echo import TimeOffsetEstimator

from appliance.config import TrackerConfig
from appliance.errors import GazeError
from appliance.gaze.base import GazeSample, GazeSource, SourceStatus
from appliance.gaze.neon_side import DeviceFixation, FrameSink, stream_fixations, stream_scene
from appliance.gaze.neon_state import NeonState

logger = logging.getLogger(__name__)

THREAD_NAME = "glanceseg-neon"
GazeToImage = Callable[[int, float, float], Optional[tuple]]
"""(timestamp_ns in the appliance clock, scene-camera x, y px) -> image (x, y) px, or
(x, y, px_per_deg), or None when unmapped."""


class _SessionEnded(Exception):
    """The gaze stream stalled or closed; the session must be rebuilt."""


_CLOCK_JUMP_NS = 1_000_000_000
#: A re-estimated clock offset that moves appliance-time stamps back by at most this much is
#: absorbed (stamps kept strictly increasing); a larger step back is passed on as a step.
_OFFSET_JITTER_NS = 20_000_000
_RETRYABLE = (OSError, asyncio.TimeoutError, aiohttp.ClientError, DeviceError, RTSPError,
              _SessionEnded, ValueError, KeyError)


class NeonGazeSource(GazeSource):
    """Live gaze from a Neon / Invisible Companion device.

    Parameters
    ----------
    config
        The ``[tracker]`` section: address, timeouts, backoff, queue size.
    to_image
        Maps a scene-camera gaze point to image px at a given appliance time (usually a
        :class:`appliance.gaze.screen_mapping.GazeToImageMapper`, whose ``screen.camera``
        is then set from the device: Neon's ``/calibration.bin``, Invisible's defaults).
        ``None`` yields NaN coordinates: gaze in scene-camera px is meaningless in image px,
        so it is never passed through as if it were.
    frame_sink
        Receives decoded scene frames (for marker detection) when ``config.scene_stream``.
    start
        Start the background thread at once.
    """

    kind = "neon"

    def __init__(self, config: TrackerConfig, to_image: Optional[GazeToImage] = None,
                 frame_sink: Optional[FrameSink] = None, start: bool = True) -> None:
        if config.queue_size < 1:
            raise ValueError("The tracker queue size must be at least 1.")
        self._config = config
        self._to_image = to_image
        self._frame_sink = frame_sink
        self._queue: "queue.Queue[Optional[GazeSample]]" = queue.Queue(maxsize=config.queue_size)
        self._fixations: "queue.Queue[DeviceFixation]" = queue.Queue(maxsize=256)
        self.state = NeonState()
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._device: Optional[Device] = None
        self._thread: Optional[threading.Thread] = None
        self._last_rx = time.monotonic()
        self._last_ts = 0
        self._last_dev_ts = 0
        self._arrivals: collections.deque = collections.deque(maxlen=400)
        #: whether each of the last second's samples was mapped onto the image
        self._mapped_recent: collections.deque = collections.deque(maxlen=200)
        #: the Neon's worn flag of each of the last second's samples
        self._worn_recent: collections.deque = collections.deque(maxlen=200)
        self._closed = False
        if start:
            self.start()

    # -- consumer side -------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if self._thread is not None:
            return
        ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name=THREAD_NAME,
                                        daemon=True)
        self._thread.start()
        ready.wait(5.0)

    def receive(self, timeout_s: Optional[float] = None) -> Optional[GazeSample]:
        """Return the next gaze sample (appliance clock, image px), or None on timeout."""
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def receive_fixation(self, timeout_s: Optional[float] = 0.0) -> Optional[DeviceFixation]:
        """Return the next device-reported fixation, or None when none is waiting."""
        try:
            if timeout_s == 0.0:
                return self._fixations.get_nowait()
            return self._fixations.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def status(self) -> SourceStatus:
        """Return connection, battery, storage, clock offset and gaze rate for the UI."""
        with self._lock:
            detail = self.state.as_dict()
            detail["gaze_rate_hz"] = self._rate_hz()
            recent = list(self._mapped_recent)
            worn = list(self._worn_recent)
        # Whether the screen is found in the scene video now (None: no gaze, or no mapping):
        # a tracker that streams while its camera sees no corner marker gives no lesion, and
        # the reader must say why rather than show the tracker connected and nothing happening.
        detail["screen_found"] = (sum(recent) >= len(recent) / 2
                                  if recent and detail["connected"] and self._to_image is not None else None)
        # Whether the glasses are on the reader's face (None: no gaze): a Neon left on the desk
        # streams "not worn" samples, which give no fixation, and the badge must say why.
        detail["worn"] = (sum(worn) >= len(worn) / 2) if worn and detail["connected"] else None
        detail["battery_percent"] = detail["battery_level"]  # the name the UI's device page shows
        detail["last_sample_age_s"] = (time.monotonic() - self._last_rx) if detail["samples"] else None
        return SourceStatus(kind=self.kind, connected=bool(detail["connected"]), detail=detail)

    def close(self) -> None:
        """Stop the thread, close the connection and wake a blocked :meth:`receive`."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # loop already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                logger.warning("Neon thread did not stop within 5 s.")
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    @property
    def config(self) -> TrackerConfig:
        """TrackerConfig: the ``[tracker]`` section this source runs with."""
        return self._config

    @property
    def clock_offset_ns(self) -> int:
        """int: appliance clock minus Companion clock, from the latest time echo."""
        with self._lock:
            return self.state.clock_offset_ns

    def run_on_device(self, fn: Callable[[Device], Coroutine[Any, Any, Any]]) -> Any:
        """Run ``fn(device)`` on the tracker's event loop and wait for its result.

        Used by the recording hooks (:mod:`appliance.gaze.neon_recording`).

        Raises
        ------
        GazeError
            If no session is up, the device refuses (``DeviceError``), or it does not answer
            within ``request_timeout_s``.
        """
        loop, device = self._loop, self._device
        if loop is None or device is None:
            raise GazeError("The eye tracker is not connected.")
        fut = asyncio.run_coroutine_threadsafe(fn(device), loop)
        try:
            return fut.result(timeout=self._config.request_timeout_s)
        except DeviceError as exc:
            raise GazeError(f"The Companion refused: {exc.args[-1]}") from exc
        except (OSError, aiohttp.ClientError, concurrent.futures.TimeoutError, asyncio.TimeoutError) as exc:
            fut.cancel()  # on Python 3.10 the futures/asyncio TimeoutErrors are distinct classes
            raise GazeError(f"The Companion did not answer: {exc!r}") from exc

    # -- background thread ---------------------------------------------------------------

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_quiet_rtsp_teardown)
        self._loop = loop
        self._stop = asyncio.Event()
        ready.set()
        try:
            loop.run_until_complete(self._main())
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        assert self._stop is not None
        backoff = self._config.reconnect_initial_s
        while not self._stop.is_set():
            delivered_before = self.state.samples
            try:
                await self._until_stopped(self._session())
            except _RETRYABLE as exc:
                with self._lock:
                    self.state.last_error = repr(exc)
                logger.warning("Eye tracker session ended: %r; reconnecting.", exc)
            with self._lock:
                self.state.connected = False
                self._mapped_recent.clear()
                self._worn_recent.clear()
            if self._stop.is_set():
                break
            with self._lock:
                self.state.reconnects += 1
            if self.state.samples > delivered_before:
                # The session worked until it stalled or dropped: retry at once.
                backoff = self._config.reconnect_initial_s
                continue
            try:
                await asyncio.wait_for(self._stop.wait(), backoff)
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2.0, self._config.reconnect_max_s)

    async def _until_stopped(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` until it ends or :meth:`close` is called, then cancel it.

        Why: a Companion out of Wi-Fi range answers nothing, so setting up a session waits
        for the status request, the time echo or mDNS to time out (3-10 s), and close(),
        called in the request that opens the next photograph, waited that long.
        """
        assert self._stop is not None
        work = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, stop):
                task.cancel()
            await asyncio.gather(work, stop, return_exceptions=True)
        if not work.cancelled():
            work.result()

    async def _find_device(self) -> Device:
        cfg = self._config
        if cfg.ip:
            return Device(cfg.ip, cfg.port)
        async with Network() as network:
            info = await network.wait_for_new_device(cfg.discover_timeout_s)
        if info is None:
            raise _SessionEnded(f"no Companion found by mDNS within {cfg.discover_timeout_s} s")
        logger.info("Discovered Companion %s at %s:%s.", info.name, info.addresses, info.port)
        return Device.from_discovered_device(info)

    async def _session(self) -> None:
        cfg = self._config
        device = await self._find_device()
        async with device:
            status = await asyncio.wait_for(device.get_status(), cfg.request_timeout_s)
            self._apply_status(status, device)
            await self._sync_clock(device, status.phone)
            await self._load_camera(device, status)
            gaze_url = status.direct_gaze_sensor().url
            if gaze_url is None:
                raise _SessionEnded("the Companion reports no connected gaze sensor")
            self._device = device
            self._last_rx = time.monotonic()
            main = [asyncio.create_task(self._gaze(gaze_url), name="neon-gaze"),
                    asyncio.create_task(self._watchdog(), name="neon-watchdog")]
            side = [asyncio.create_task(self._status_updates(device), name="neon-status"),
                    asyncio.create_task(self._clock_loop(device, status.phone), name="neon-clock")]
            events_url = status.direct_eye_events_sensor().url
            if cfg.fixation_events and events_url:
                side.append(asyncio.create_task(self._retrying(self._eye_events, events_url)))
            world_url = status.direct_world_sensor().url
            if cfg.scene_stream and self._frame_sink is not None and world_url:
                side.append(asyncio.create_task(self._retrying(self._scene, world_url)))
            stop = asyncio.create_task(self._stop.wait())  # type: ignore[union-attr]
            # ``connected`` is set by the session's first gaze datum (_on_gaze), not here: a
            # locked phone answers its status but streams nothing, and the reader's badge
            # then showed the tracker connected during every reconnect attempt.
            logger.info("Eye tracker session up: %s.", device)
            try:
                done, _ = await asyncio.wait(main + [stop], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is not stop:
                        task.result()
                        raise _SessionEnded("gaze stream closed")
            finally:
                self._device = None
                for task in main + side + [stop]:
                    task.cancel()
                await asyncio.gather(*main, *side, stop, return_exceptions=True)

    def _apply_status(self, status: Status, device: Device) -> None:
        with self._lock:
            self.state.address = f"{device.address}:{device.port}"
            for component in [status.phone, status.hardware] + ([status.recording] if status.recording else []):
                self.state.apply(component)

    async def _load_camera(self, device: Device, status: Status) -> None:
        """Give the screen mapper this device's scene camera model (duck-typed on
        ``to_image.screen.camera``): Neon serves its own calibration, Pupil Invisible uses
        the published defaults."""
        screen = getattr(self._to_image, "screen", None)
        if screen is None or not hasattr(screen, "camera"):
            return
        from appliance.gaze.screen_mapping import INVISIBLE_SCENE_CAMERA, parse_calibration_bin

        if str(status.hardware.version) == "1":
            screen.camera = INVISIBLE_SCENE_CAMERA
            return
        async with device.active_session.get(device.api_url(APIPath.CALIBRATION)) as resp:
            if resp.status != 200:
                logger.warning("Companion served no calibration (HTTP %s); keeping the current "
                               "camera model.", resp.status)
                return
            data = await resp.read()
        try:
            screen.camera = parse_calibration_bin(data)
        except GazeError as exc:
            logger.warning("Camera calibration unusable: %s", exc)

    async def _status_updates(self, device: Device) -> None:
        async for component in device.status_updates():
            with self._lock:
                self.state.apply(component)

    async def _sync_clock(self, device: Device, phone: Phone) -> None:
        if phone.time_echo_port is None:
            logger.warning("Companion offers no time-echo port; trusting its NTP clock (offset 0).")
            return
        estimator = TimeOffsetEstimator(device.address, phone.time_echo_port)
        try:
            estimate = await asyncio.wait_for(
                estimator.estimate(number_of_measurements=max(2, self._config.time_echo_measurements)),
                self._config.request_timeout_s * 3)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            # The library raises ValueError when the echo port hangs up before its first answer.
            # The offset only refines the stamps: a failed echo must neither keep gaze from
            # flowing (every session ended here) nor end the periodic re-estimates.
            estimate = None
            logger.warning("Time echo with the Companion failed: %r", exc)
        if estimate is None:
            logger.warning("Time echo failed; keeping clock offset %d ns.", self.state.clock_offset_ns)
            return
        offset_ns = int(round(estimate.time_offset_ms.median * 1e6))
        with self._lock:
            self.state.clock_offset_ns = offset_ns
            self.state.clock_rtt_ms = float(estimate.roundtrip_duration_ms.median)
        logger.info("Clock offset to Companion: %.1f ms (round trip %.1f ms).",
                    offset_ns / 1e6, estimate.roundtrip_duration_ms.median)

    async def _clock_loop(self, device: Device, phone: Phone) -> None:
        while True:
            await asyncio.sleep(self._config.time_echo_interval_s)
            await self._sync_clock(device, phone)  # logs its own failures and keeps the offset

    async def _watchdog(self) -> None:
        timeout = self._config.stall_timeout_s
        while True:
            await asyncio.sleep(min(0.1, timeout / 4))
            silent = time.monotonic() - self._last_rx
            if silent > timeout:
                with self._lock:
                    self.state.stalls += 1
                raise _SessionEnded(f"gaze stream silent for {silent:.2f} s")

    def _rtsp_timeout(self) -> float:
        return max(2.0 * self._config.stall_timeout_s, self._config.request_timeout_s)

    async def _gaze(self, url: str) -> None:
        async with RTSPGazeStreamer(url, timeout=self._rtsp_timeout(), log_level=logging.WARNING) as streamer:
            async for datum in streamer.receive():
                if hasattr(datum, "x"):  # every payload but dual-monocular carries the binocular gaze
                    x, y = datum.x, datum.y
                else:
                    x, y = (datum.left.x + datum.right.x) / 2.0, (datum.left.y + datum.right.y) / 2.0
                self._on_gaze(datum.timestamp_unix_ns, x, y, bool(datum.worn))

    def _on_gaze(self, device_ts_ns: int, x: float, y: float, worn: bool) -> None:
        self._last_rx = time.monotonic()
        if device_ts_ns <= self._last_dev_ts - _CLOCK_JUMP_NS:
            # The phone's clock stepped back (NTP): pass the jump on rather than drop a
            # second of gaze; downstream fixation detection treats a jump as a break.
            logger.warning("Companion clock stepped back %.1f s.", (self._last_dev_ts - device_ts_ns) / 1e9)
            self._last_dev_ts = self._last_ts = 0
        if device_ts_ns <= self._last_dev_ts:
            with self._lock:
                self.state.out_of_order += 1
            return
        with self._lock:
            ts = device_ts_ns + self.state.clock_offset_ns
            self._arrivals.append(device_ts_ns)
        if ts <= self._last_ts - _OFFSET_JITTER_NS:
            # The offset was re-estimated after a clock step (the phone's NTP, a first time
            # echo that failed): clamping would stamp every sample until the old time is
            # reached 1 ns apart (no fixation, a stale homography for the whole step), so
            # the step is passed on like the device clock's own step above.
            logger.warning("Gaze timestamps stepped back %.3f s with the re-estimated clock offset.",
                           (self._last_ts - ts) / 1e9)
        else:
            # A re-estimated offset may step back by a millisecond: keep the stream monotonic.
            ts = max(ts, self._last_ts + 1)
        self._last_dev_ts, self._last_ts = device_ts_ns, ts
        ix = iy = ppd = float("nan")
        if self._to_image is not None:
            mapped = self._to_image(ts, float(x), float(y))
            if mapped is not None:
                ix, iy = float(mapped[0]), float(mapped[1])
                if len(mapped) > 2:
                    ppd = float(mapped[2])
        sample = GazeSample(timestamp_ns=ts, x=ix, y=iy, worn=worn, px_per_deg=ppd)
        dropped = 0
        try:
            self._queue.put_nowait(sample)
        except queue.Full:  # keep the newest: drop the oldest and count it
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._queue.put_nowait(sample)
            dropped = 1
        with self._lock:
            if not self.state.connected:
                logger.info("Eye tracker gaze flowing.")
            self.state.connected = True
            self.state.samples += 1
            self.state.dropped += dropped
            self.state.mapped += ix == ix
            self._mapped_recent.append(ix == ix)
            self._worn_recent.append(worn)

    def _rate_hz(self) -> float:
        """Gaze rate over the last 400 device timestamps; 0 while disconnected. Lock held."""
        arrivals = list(self._arrivals)
        if not self.state.connected or len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
            return 0.0
        return (len(arrivals) - 1) / ((arrivals[-1] - arrivals[0]) / 1e9)

    async def _retrying(self, fn: Callable[[str], Coroutine[Any, Any, None]], url: str) -> None:
        """Run a side stream; its failure never ends the gaze session."""
        while True:
            try:
                await fn(url)
            except _RETRYABLE as exc:
                logger.warning("Side stream %s failed: %r", url, exc)
            await asyncio.sleep(1.0)

    async def _eye_events(self, url: str) -> None:
        def offset() -> int:
            with self._lock:
                return self.state.clock_offset_ns
        await stream_fixations(url, self._rtsp_timeout(), offset, self._to_image, self._fixations)

    async def _scene(self, url: str) -> None:
        assert self._frame_sink is not None
        await stream_scene(url, self._rtsp_timeout(), self._frame_sink, self.state, self._lock)


def _quiet_rtsp_teardown(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """aiortsp cancels its stream task without awaiting it; the TEARDOWN it then sends to a
    device that already hung up fails in a task nobody awaits. That is expected on every
    reconnect, so it is logged at debug level instead of as an unhandled error."""
    if isinstance(context.get("exception"), RTSPError):
        logger.debug("RTSP teardown after disconnect: %r", context.get("exception"))
        return
    loop.default_exception_handler(context)


def discover(timeout_s: float) -> list:
    """Return the Companion devices announced by mDNS within ``timeout_s`` (blocking)."""
    async def _run() -> list:
        found = []
        async with Network() as network:
            deadline = time.monotonic() + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                info = await network.wait_for_new_device(left)
                if info is None:
                    break
                found.append(info)
        return found
    return asyncio.run(_run())


__all__ = ["NeonGazeSource", "DeviceFixation", "GazeToImage", "FrameSink",
           "discover", "THREAD_NAME"]
