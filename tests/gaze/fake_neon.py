"""A faithful fake Neon Companion on loopback, spoken to by the *real* Pupil Labs client.

What it serves, as the Companion app does (see the client library's ``models.py``,
``streaming/base.py``, ``time_echo.py`` and Pupil Labs' "under the hood" guide):

- HTTP ``GET /api/status``: ``{"message", "result": [{"model", "data"}, ...]}`` with Phone,
  Hardware, Sensor (DIRECT, ``rtsp://ip:port/?camera=...``) and Recording components; the same
  path upgrades to a websocket that pushes one component per message on change.
- ``POST /api/recording:start|stop_and_save|cancel``, ``POST /api/event``,
  ``GET /calibration.bin`` (the Neon layout: version, serial, three cameras' matrix, 8
  distortion coefficients and 4x4 extrinsics as little-endian float64, then a CRC32).
- RTSP (OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN) over TCP with RTP/RTCP over
  UDP (the client's ``rtsp://`` scheme selects aiortsp's UDP transport). Gaze payloads are
  ``com.pupillabs.gaze1`` (``!ffB``, worn 255/0); an RTCP sender report goes out *before* the
  first RTP packet and every second, since the client drops data until it has one.
- Eye events (``!iqqffffffffff`` fixations) on ``camera=eye_events``.
- The time-echo TCP port: 8-byte client ms in, 16 bytes (echo, device ms) out.

Its clock can run ahead of the host's by ``clock_offset_s`` (timestamps, SR NTP time and time
echo all use it) and step during a session (``step_clock``), and it can stall streams, drop
connections, go offline or refuse time echo on command.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import parse_qs, urlparse

import numpy as np
from aiohttp import web

CLOCK_RATE = 90_000
NTP_EPOCH_OFFSET_S = 2_208_988_800
# Written out again from Pupil Labs' layout on purpose, not imported from
# appliance.gaze.screen_mapping: a fake that shared the parser's layout could not catch a
# mistake in it.
CALIB_DTYPE = np.dtype([
    ("version", "u1"), ("serial", "S6"),
    ("scene_camera_matrix", "<f8", (3, 3)), ("scene_distortion_coefficients", "<f8", (8,)),
    ("scene_extrinsics_affine_matrix", "<f8", (4, 4)),
    ("right_camera_matrix", "<f8", (3, 3)), ("right_distortion_coefficients", "<f8", (8,)),
    ("right_extrinsics_affine_matrix", "<f8", (4, 4)),
    ("left_camera_matrix", "<f8", (3, 3)), ("left_distortion_coefficients", "<f8", (8,)),
    ("left_extrinsics_affine_matrix", "<f8", (4, 4)),
    ("crc", "<u4"),
])
NEON_SCENE_K = np.array([[891.6, 0.0, 812.3], [0.0, 891.2, 598.7], [0.0, 0.0, 1.0]])
NEON_SCENE_D = np.array([-0.1320, 0.1106, 0.0001, -0.0002, -0.0028, 0.1713, 0.0517, 0.0213])


def calibration_bytes(k: np.ndarray = NEON_SCENE_K, d: np.ndarray = NEON_SCENE_D,
                      serial: bytes = b"FAKE01") -> bytes:
    """Return a ``/calibration.bin`` body for the given scene intrinsics."""
    rec = np.zeros((), dtype=CALIB_DTYPE)
    rec["version"], rec["serial"] = 1, serial
    rec["scene_camera_matrix"], rec["scene_distortion_coefficients"] = k, d
    for cam in ("scene", "right", "left"):
        rec[f"{cam}_extrinsics_affine_matrix"] = np.eye(4)
    for eye in ("right", "left"):
        rec[f"{eye}_camera_matrix"] = np.array([[140.0, 0, 96], [0, 140.0, 96], [0, 0, 1]])
    body = rec.tobytes()[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


@dataclass
class SentSample:
    """One gaze datum as the fake sent it (device-clock timestamp, float32 values)."""

    index: int
    device_ts_ns: int
    x: float
    y: float
    worn: bool
    sent_wall_ns: int


def default_gaze(index: int) -> tuple[float, float, bool]:
    """A smooth path over the scene camera (1600x1200), always worn."""
    return 800.0 + 300.0 * math.sin(index * 0.013), 600.0 + 200.0 * math.cos(index * 0.011), True


@dataclass
class _Session:
    camera: str
    client: tuple[str, int, int]
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    rtp_base: int = field(default_factory=lambda: random.getrandbits(20))
    t0_ns: int = 0
    playing: bool = False
    stalled: bool = False
    packets: int = 0
    octets: int = 0
    rtp: Optional[asyncio.DatagramTransport] = None
    rtcp: Optional[asyncio.DatagramTransport] = None
    last_sr: float = 0.0


class FakeNeon:
    """The fake Companion, running its own event loop in a background thread.

    Parameters
    ----------
    rate_hz
        Gaze rate (Neon: 200 Hz).
    clock_offset_s
        Device clock minus host clock.
    gaze_fn
        index -> (scene x, scene y, worn).
    fixation_every
        Emit a fixation event every N gaze samples (0: none).
    """

    def __init__(self, rate_hz: float = 200.0, clock_offset_s: float = 0.0,
                 gaze_fn: Callable[[int], tuple[float, float, bool]] = default_gaze,
                 fixation_every: int = 40, hardware_version: str = "2",
                 scene_frames: Optional[dict[str, np.ndarray]] = None, scene_fps: float = 10.0,
                 camera: Optional[tuple[np.ndarray, np.ndarray]] = None) -> None:
        self.rate_hz, self.clock_offset_ns = rate_hz, int(round(clock_offset_s * 1e9))
        self.clock_step_ns = 0  # wall-clock steps since start (see step_clock)
        #: the time-echo port accepts, then closes without answering (a broken echo service)
        self.echo_hangs_up = False
        self.gaze_fn, self.fixation_every, self.hardware_version = gaze_fn, fixation_every, hardware_version
        self.sent: list[SentSample] = []
        self.dual_monocular = False
        self.camera = camera or (NEON_SCENE_K, NEON_SCENE_D)
        self.scene_state = "visible"  # which of ``scene_frames`` the scene camera sees now
        self.scene_fps = scene_fps
        self.frames_sent: list[tuple[int, str]] = []
        self._scene: dict = {}
        self._sprop = ""
        if scene_frames:
            from fake_scene import SceneEncoder

            h, w = next(iter(scene_frames.values())).shape[:2]
            encoder = SceneEncoder(w, h)
            self._scene = {k: encoder.encode(v) for k, v in scene_frames.items()}
            self._sprop = encoder.sprop()
        self.events: list[dict] = []
        self.recording_id: Optional[str] = None
        self.battery_level, self.memory = 87, 64_000_000_000
        self.stall_new_sessions = False
        self.sessions: list[_Session] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._unfrozen = asyncio.Event()  # created on 3.10 outside the loop: bound when first used
        self._unfrozen.set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-neon", daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self._echo_writers: set[asyncio.StreamWriter] = set()
        self._websockets: set[web.WebSocketResponse] = set()
        self.http_port = self.rtsp_port = self.echo_port = 0
        self._servers: list = []
        self._runner: Optional[web.AppRunner] = None
        self._producer: Optional[asyncio.Task] = None

    # -- lifecycle and commands (called from the test thread) -----------------------------

    def start(self) -> "FakeNeon":
        self._thread.start()
        self._run(self._start_servers())
        self._producer = self._run(self._make_producer())
        return self

    def advertise(self) -> None:
        """Announce the API by mDNS as the Companion does (``PI monitor:<name>:<id>``)."""
        self._run(self._advertise())

    async def _advertise(self) -> None:
        import socket

        from zeroconf import ServiceInfo
        from zeroconf.asyncio import AsyncZeroconf

        self._zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"])
        self._service = ServiceInfo(
            "_http._tcp.local.", "PI monitor:Fake Neon:f00dfeedc0ffee01._http._tcp.local.",
            addresses=[socket.inet_aton("127.0.0.1")], port=self.http_port, server="neon.local.")
        await self._zeroconf.async_register_service(self._service)

    async def _unadvertise(self) -> None:
        if getattr(self, "_zeroconf", None) is not None:
            await self._zeroconf.async_close()  # unregisters, waiting for the goodbye
            self._zeroconf = None

    def stop(self) -> None:
        self._run(self._unadvertise())
        self._run(self._stop_servers())
        self._run(self._cancel_producer())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def now_ns(self) -> int:
        """The device clock."""
        return time.time_ns() + self.clock_offset_ns + self.clock_step_ns

    def stall(self) -> None:
        """Freeze the streams now playing (TCP stays open, no RTP/RTCP): a silent stream."""
        with self._lock:
            for s in self.sessions:
                s.stalled = True

    def drop_connections(self) -> None:
        """Close every RTSP and websocket connection (the phone's Wi-Fi blinked)."""
        self._run(self._drop())

    def go_offline(self) -> None:
        """Stop answering at all: close connections and listening sockets."""
        self._run(self._stop_servers())

    def come_back(self) -> None:
        """Listen again on the same ports."""
        self._run(self._start_servers())

    def freeze(self) -> None:
        """The network is gone (Wi-Fi out of range): nothing is sent or answered any more, but
        no connection is refused or closed either, so every request hangs until its timeout."""
        self._loop.call_soon_threadsafe(self._unfrozen.clear)

    def thaw(self) -> None:
        """The network is back: held requests are answered and the streams resume."""
        self._loop.call_soon_threadsafe(self._unfrozen.set)

    def step_clock(self, delta_s: float) -> None:
        """Step the device's wall clock by ``delta_s`` (NTP, or the user setting the phone's
        time). As on a real sender the RTP media clock runs on: the sender reports (and so
        the client's timestamps from the next one on), time echo and events follow the step."""
        async def step() -> None:  # on the fake's loop: never between a sample's stamp and send
            self.clock_step_ns += int(round(delta_s * 1e9))
        self._run(step())

    def echo_offline(self) -> None:
        """Stop the time-echo server only (its port refuses), the rest keeps running."""
        self._run(self._echo_offline())

    def echo_back(self) -> None:
        """Listen for time echo again on the same port."""
        self._run(self._echo_back())

    async def _echo_offline(self) -> None:
        echo = self._servers.pop()
        echo.close()
        for w in list(self._echo_writers):
            w.close()
        await echo.wait_closed()

    async def _echo_back(self) -> None:
        self._servers.append(await asyncio.start_server(
            self._echo_client, "127.0.0.1", self.echo_port, reuse_address=True))

    def set_battery(self, level: int) -> None:
        self.battery_level = level
        self._run(self._push(self._phone()))

    def _run(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- servers ------------------------------------------------------------------------

    async def _cancel_producer(self) -> None:
        if self._producer is not None:
            self._producer.cancel()
            await asyncio.gather(self._producer, return_exceptions=True)

    async def _make_producer(self) -> asyncio.Task:
        return asyncio.create_task(self._produce())

    async def _start_servers(self) -> None:
        app = web.Application()
        app.router.add_get("/api/status", self._status)
        app.router.add_post("/api/recording:start", self._rec_start)
        app.router.add_post("/api/recording:stop_and_save", self._rec_stop)
        app.router.add_post("/api/recording:cancel", self._rec_stop)
        app.router.add_post("/api/event", self._event)
        app.router.add_get("/calibration.bin", self._calibration)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.http_port, reuse_address=True)
        await site.start()
        self.http_port = self._runner.addresses[0][1]
        rtsp = await asyncio.start_server(self._rtsp_client, "127.0.0.1", self.rtsp_port, reuse_address=True)
        echo = await asyncio.start_server(self._echo_client, "127.0.0.1", self.echo_port, reuse_address=True)
        self.rtsp_port = rtsp.sockets[0].getsockname()[1]
        self.echo_port = echo.sockets[0].getsockname()[1]
        self._servers = [rtsp, echo]

    async def _stop_servers(self) -> None:
        for server in self._servers:
            server.close()
        await self._drop()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _drop(self) -> None:
        for w in list(self._writers):
            w.close()
        for ws in list(self._websockets):
            await ws.close()
        with self._lock:
            for s in self.sessions:
                self._close_session(s)
            self.sessions.clear()

    # -- HTTP API -----------------------------------------------------------------------

    def _phone(self) -> dict:
        return {"model": "Phone", "data": {
            "battery_level": self.battery_level, "battery_state": "OK" if self.battery_level > 15 else "LOW",
            "device_id": "f00dfeedc0ffee01", "device_name": "Fake Neon", "ip": "127.0.0.1",
            "memory": self.memory, "memory_state": "OK", "time_echo_port": self.echo_port}}

    def _components(self) -> list[dict]:
        def sensor(name: str, connected: bool = True) -> dict:
            return {"model": "Sensor", "data": {
                "sensor": name, "conn_type": "DIRECT", "connected": connected, "ip": "127.0.0.1",
                "params": f"camera={name}", "port": self.rtsp_port, "protocol": "rtsp",
                "stream_error": False}}
        comps = [self._phone(),
                 {"model": "Hardware", "data": {"version": self.hardware_version, "glasses_serial": "-1",
                                                "world_camera_serial": "-1", "module_serial": "FAKE01"}},
                 sensor("gaze"), sensor("eye_events", self.fixation_every > 0),
                 sensor("world", bool(self._scene))]
        if self.recording_id:
            comps.append({"model": "Recording", "data": {"action": "START", "id": self.recording_id,
                                                         "message": "", "rec_duration_ns": 0}})
        return comps

    async def _status(self, request: web.Request) -> web.StreamResponse:
        await self._unfrozen.wait()
        ws = web.WebSocketResponse()
        if ws.can_prepare(request).ok:
            await ws.prepare(request)
            self._websockets.add(ws)
            try:
                for comp in self._components():
                    await ws.send_str(json.dumps(comp))
                async for _ in ws:
                    pass
            finally:
                self._websockets.discard(ws)
            return ws
        return web.json_response({"message": "Success", "result": self._components()})

    async def _push(self, comp: dict) -> None:
        for ws in list(self._websockets):
            await ws.send_str(json.dumps(comp))

    async def _rec_start(self, request: web.Request) -> web.Response:
        if self.recording_id:
            return web.json_response({"message": "Recording running"}, status=400)
        self.recording_id = str(uuid.uuid4())
        await self._push(self._components()[-1])
        return web.json_response({"message": "Started recording", "result": {"id": self.recording_id}})

    async def _rec_stop(self, request: web.Request) -> web.Response:
        if not self.recording_id:
            return web.json_response({"message": "Recording not running"}, status=400)
        rec_id, self.recording_id = self.recording_id, None
        await self._push({"model": "Recording", "data": {"action": "SAVE", "id": rec_id, "message": "",
                                                         "rec_duration_ns": 1}})
        return web.json_response({"message": "Stopped recording", "result": {"id": rec_id, "rec_duration_ns": 1}})

    async def _event(self, request: web.Request) -> web.Response:
        body = await request.json()
        event = {"name": body["name"], "timestamp": int(body.get("timestamp", self.now_ns())),
                 "recording_id": self.recording_id}
        self.events.append(event)
        return web.json_response({"message": "Event received",
                                  "result": {"recording_id": self.recording_id, "timestamp": event["timestamp"]}})

    async def _calibration(self, request: web.Request) -> web.Response:
        return web.Response(body=calibration_bytes(*self.camera), content_type="application/octet-stream")

    # -- time echo ------------------------------------------------------------------------

    async def _echo_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self._echo_writers.add(writer)
        try:
            while not self.echo_hangs_up:
                data = await reader.readexactly(8)
                await self._unfrozen.wait()
                writer.write(data + struct.pack("!Q", self.now_ns() // 1_000_000))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            self._echo_writers.discard(writer)
            writer.close()

    # -- RTSP ---------------------------------------------------------------------------

    async def _rtsp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        session: Optional[_Session] = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await self._unfrozen.wait()
                lines = head.decode().split("\r\n")
                method, url, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in
                           (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                if int(headers.get("content-length", 0)):
                    await reader.readexactly(int(headers["content-length"]))
                camera = parse_qs(urlparse(url).query).get("camera", ["gaze"])[0]
                out = {"CSeq": headers.get("cseq", "0")}
                body = b""
                if method == "OPTIONS":
                    out["Public"] = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"
                elif method == "DESCRIBE":
                    body = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=Pupil Labs Companion\r\nt=0 0\r\n"
                            + self._media(camera)).encode()
                    out["Content-Type"] = "application/sdp"
                elif method == "SETUP":
                    ports = dict(p.split("=", 1) for p in headers["transport"].split(";") if "=" in p)
                    rtp_port, rtcp_port = (int(v) for v in ports["client_port"].split("-"))
                    session = _Session(camera, (writer.get_extra_info("peername")[0], rtp_port, rtcp_port))
                    loop = asyncio.get_running_loop()
                    session.rtp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
                    session.rtcp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
                    srv = (session.rtp.get_extra_info("sockname")[1], session.rtcp.get_extra_info("sockname")[1])
                    out["Transport"] = f"RTP/AVP;unicast;client_port={rtp_port}-{rtcp_port};server_port={srv[0]}-{srv[1]}"
                    out["Session"] = f"{session.ssrc:08x};timeout=60"
                elif method == "PLAY" and session is not None:
                    out["Session"], out["Range"] = f"{session.ssrc:08x}", "npt=now-"
                    session.t0_ns, session.stalled = self.now_ns() - self.clock_step_ns, self.stall_new_sessions
                    self._send_sr(session, self.now_ns())  # before any RTP, as the client needs
                    session.playing = True
                    with self._lock:
                        self.sessions.append(session)
                elif method == "TEARDOWN":
                    self._reply(writer, 200, "OK", out)
                    await writer.drain()
                    break
                elif method != "GET_PARAMETER":
                    self._reply(writer, 405, "Method Not Allowed", out)
                    continue
                self._reply(writer, 200, "OK", out, body)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            if session is not None:
                with self._lock:
                    if session in self.sessions:
                        self.sessions.remove(session)
                self._close_session(session)
            writer.close()

    def _media(self, camera: str) -> str:
        if camera == "world":
            return (f"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/{CLOCK_RATE}\r\n"
                    f"a=fmtp:96 packetization-mode=1;sprop-parameter-sets={self._sprop}\r\n")
        enc = "com.pupillabs.gaze1" if camera == "gaze" else "com.pupillabs.eye_events1"
        return f"m=application 0 RTP/AVP 99\r\na=rtpmap:99 {enc}/{CLOCK_RATE}\r\n"

    @staticmethod
    def _reply(writer: asyncio.StreamWriter, code: int, text: str, headers: dict, body: bytes = b"") -> None:
        if body:
            headers["Content-Length"] = str(len(body))
        msg = f"RTSP/1.0 {code} {text}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(msg.encode() + body)

    @staticmethod
    def _close_session(s: _Session) -> None:
        s.playing = False
        for t in (s.rtp, s.rtcp):
            if t is not None:
                t.close()

    def _rtp_ts(self, s: _Session, device_ns: int) -> int:
        media_ns = device_ns - self.clock_step_ns  # the media clock does not follow wall steps
        return (s.rtp_base + (media_ns - s.t0_ns) * CLOCK_RATE // 1_000_000_000) & 0xFFFFFFFF

    def _send_sr(self, s: _Session, device_ns: int) -> None:
        ntp = device_ns / 1e9 + NTP_EPOCH_OFFSET_S
        sec = int(ntp)
        frac = int((ntp - sec) * 2**32) & 0xFFFFFFFF
        pkt = struct.pack("!BBHIIIIII", 0x80, 200, 6, s.ssrc, sec, frac, self._rtp_ts(s, device_ns),
                          s.packets, s.octets)
        assert s.rtcp is not None
        s.rtcp.sendto(pkt, (s.client[0], s.client[2]))
        s.last_sr = time.monotonic()

    def _send_rtp(self, s: _Session, device_ns: int, payload: bytes, pt: int = 99, marker: bool = True) -> None:
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, s.seq, self._rtp_ts(s, device_ns), s.ssrc)
        s.seq = (s.seq + 1) & 0xFFFF
        assert s.rtp is not None
        s.rtp.sendto(header + payload, (s.client[0], s.client[1]))
        s.packets += 1
        s.octets += len(payload)

    async def _produce(self) -> None:
        """Generate gaze at ``rate_hz`` on an absolute schedule and send it to every session."""
        period_ns = int(1e9 / self.rate_hz)
        start_dev = self.now_ns()
        start_step = self.clock_step_ns
        start_mono = time.monotonic_ns()
        index = 0
        while True:
            target = start_mono + index * period_ns
            delay = (target - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            device_ns = start_dev + index * period_ns + self.clock_step_ns - start_step
            x, y, worn = self.gaze_fn(index)
            x32, y32 = float(np.float32(x)), float(np.float32(y))
            if self.dual_monocular:  # 17 bytes: left eye, worn, right eye (Companion option)
                payload = struct.pack("!ffBff", x32 - 4.0, y32, 255 if worn else 0, x32 + 4.0, y32)
            else:
                payload = struct.pack("!ffB", x32, y32, 255 if worn else 0)
            with self._lock:
                live = [s for s in self.sessions if s.playing and not s.stalled and self._unfrozen.is_set()]
            if any(s.camera == "gaze" for s in live):
                # Recorded before it goes out, so a test that has received it always finds it here.
                self.sent.append(SentSample(index, device_ns, x32, y32, worn, time.time_ns()))
            for s in live:
                if s.camera == "gaze":
                    if time.monotonic() - s.last_sr > 1.0:
                        self._send_sr(s, device_ns)
                    self._send_rtp(s, device_ns, payload)
                elif s.camera == "eye_events" and self.fixation_every and index % self.fixation_every == 0 and index:
                    start = device_ns - (self.fixation_every - 1) * period_ns
                    ev = struct.pack("!iqqffffffffff", 1, start, device_ns, x32, y32, x32, y32, x32, y32,
                                     0.0, 0.0, 0.0, 0.0)
                    if time.monotonic() - s.last_sr > 1.0:
                        self._send_sr(s, device_ns)
                    self._send_rtp(s, device_ns, ev)
            frame_every = max(1, round(self.rate_hz / self.scene_fps))
            if self._scene and index % frame_every == 0:
                state = self.scene_state
                payloads = self._scene[state].payloads
                for s in live:
                    if s.camera == "world":
                        if time.monotonic() - s.last_sr > 1.0:
                            self._send_sr(s, device_ns)
                        for k, p in enumerate(payloads):
                            self._send_rtp(s, device_ns, p, pt=96, marker=k == len(payloads) - 1)
                        self.frames_sent.append((device_ns, state))
            index += 1


def _serve() -> None:  # pragma: no cover - a tool, exercised by bench_neon.py
    """Run the fake in its own process (for measurements free of the client's GIL).

    Prints one JSON line with the ports, then obeys stdin lines: ``stall``, ``offline``,
    ``back``, ``quit`` (which prints the sent samples' device and wall-clock times as JSON).
    """
    import sys

    frames = None
    if "scene" in sys.argv[2:]:  # 30 Hz Neon-resolution scene video of the marked screen
        import cv2
        from neon_helpers import SceneRenderer, pose, screen_image

        from appliance.gaze.screen_mapping import CameraModel, screen_markers

        renderer = SceneRenderer(CameraModel(NEON_SCENE_K, NEON_SCENE_D, (1600, 1200)))
        h = pose([[530, 448], [1070, 440], [1075, 752], [530, 758]])
        grey = renderer.render(screen_image(screen_markers(1920, 1080)), h)
        frames = {"visible": cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)}
    fake = FakeNeon(clock_offset_s=3.25, scene_frames=frames, scene_fps=30.0).start()
    print(json.dumps({"http_port": fake.http_port, "rtsp_port": fake.rtsp_port}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "stall":
            fake.stall()
        elif cmd == "offline":
            fake.go_offline()
        elif cmd == "back":
            fake.come_back()
        elif cmd == "quit":
            break
        print(json.dumps({"ok": cmd, "wall_ns": time.time_ns()}), flush=True)
    sent = [(s.device_ts_ns, s.sent_wall_ns) for s in fake.sent]
    fake.stop()
    print(json.dumps({"sent": sent}), flush=True)


if __name__ == "__main__":
    _serve()
