"""A loopback HTTP(S) server whose answers a test writes, optionally in front of a real Orthanc.

Why a second helper beside :mod:`sync.faulty_proxy`: that proxy picks faults at random for the
soak tests; the tests of one HTTP answer (a 404 from a wrong DICOMweb root, a redirect, a trickle)
need the exact answer, every time, and to see what the client sent.

``answer(request)`` is called for each request with a :class:`Request` and returns a
:class:`Reply`, or None to forward the request to Orthanc unchanged.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering (a stalled server); 0: at once.
    delay_s: float = 0.0
    #: Send the answer this many bytes at a time with ``trickle_s`` between them (a slow link).
    trickle_bytes: int = 0
    trickle_s: float = 0.0


class ScriptedServer:
    """Serve on a free loopback port until :meth:`close`; every request is kept in ``requests``."""

    def __init__(self, answer: Callable[[Request], Optional[Reply]], upstream_port: Optional[int] = None,
                 ssl_context: Optional[ssl.SSLContext] = None, read_bytes_per_s: float = 0.0) -> None:
        self.answer = answer
        self.upstream_port = upstream_port
        self.requests: list[Request] = []
        self.stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                chunks, got = [], 0
                while got < length:
                    step = min(65536, length - got)
                    if read_bytes_per_s:  # a slow uplink: the client's sends block on a full window
                        step = min(step, max(1, int(read_bytes_per_s / 10)))
                        time.sleep(0.1)
                    chunk = self.rfile.read(step)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    got += len(chunk)
                return b"".join(chunks)

            def _handle(self) -> None:
                request = Request(self.command, self.path, dict(self.headers.items()), self._body())
                owner.requests.append(request)
                reply = owner.answer(request)
                if reply is None:
                    reply = owner.forward(request)
                if reply.delay_s:
                    owner.stop.wait(reply.delay_s)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if reply.trickle_bytes:
                    for i in range(0, len(reply.body), reply.trickle_bytes):
                        if owner.stop.wait(reply.trickle_s):
                            return
                        self.wfile.write(reply.body[i:i + reply.trickle_bytes])
                        self.wfile.flush()
                else:
                    self.wfile.write(reply.body)
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        if read_bytes_per_s:
            # A small receive window, as on a real slow link: loopback's megabytes of buffer would
            # let the client finish writing long before the server has read the body.
            self.httpd.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        self.httpd.server_bind()
        self.httpd.server_activate()
        self.httpd.daemon_threads = True
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="scripted-server", daemon=True)
        self._thread.start()

    def forward(self, request: Request) -> Reply:
        """Send ``request`` to the upstream Orthanc and return its answer."""
        assert self.upstream_port is not None, "no upstream to forward to"
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("connection", "host")}
            conn.request(request.method, request.path, body=request.body or None, headers=headers)
            response = conn.getresponse()
            keep = {k: v for k, v in response.getheaders()
                    if k.lower() not in ("connection", "content-length", "transfer-encoding", "keep-alive")}
            return Reply(response.status, response.read(), keep)
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ScriptedServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
