"""A loopback HTTP proxy in front of Orthanc that misbehaves on purpose (or terminates TLS).

For each request it picks a fault at random (seeded): forward it; answer 500; hang (never answer);
drop the connection mid-upload (after reading part of the body); or forward it to Orthanc and then
drop the connection before the answer reaches the client (the server stored the instance, the
client does not know: the hard case for exactly-once delivery).
"""

from __future__ import annotations

import random
import ssl
import socket
import threading
import time
from typing import Optional

FAULTS = ("forward", "error500", "hang", "drop_upload", "drop_answer")


class FaultyProxy:
    def __init__(self, upstream_port: int, seed: int, weights: Optional[dict[str, float]] = None,
                 ssl_context: Optional["ssl.SSLContext"] = None) -> None:
        self.upstream_port = upstream_port
        self.ssl_context = ssl_context
        self.rng = random.Random(seed)
        self.weights = weights or {"forward": 0.5, "error500": 0.125, "hang": 0.125, "drop_upload": 0.125,
                                   "drop_answer": 0.125}
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.counts = {f: 0 for f in FAULTS}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="faulty-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()

    def _pick(self, method: str) -> str:
        with self._lock:
            if method != "POST":  # only uploads are broken on the way in; queries may still fail or hang
                choices = ["forward", "error500", "hang"]
                weights = [self.weights.get("forward", 0) * 2, self.weights.get("error500", 0),
                           self.weights.get("hang", 0)]
            else:
                choices = list(self.weights)
                weights = list(self.weights.values())
            fault = self.rng.choices(choices, weights)[0]
            self.counts[fault] += 1
            return fault

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            client.settimeout(30)
            if self.ssl_context is not None:  # terminate TLS here, forward plain HTTP on loopback
                try:
                    client = self.ssl_context.wrap_socket(client, server_side=True)
                except (ssl.SSLError, OSError):
                    self.counts["tls_refused"] = self.counts.get("tls_refused", 0) + 1
                    return
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ")[0]
            length = 0
            headers = []
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
                if name.strip().lower() == "connection":
                    continue
                headers.append(line)
            fault = self._pick(method)
            if fault == "drop_upload" and length:
                while len(body) < length // 2:
                    chunk = client.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                client.shutdown(socket.SHUT_RDWR)
                return
            while len(body) < length:
                chunk = client.recv(65536)
                if not chunk:
                    return
                body += chunk
            if fault == "error500":
                client.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            if fault == "hang":
                self._stop.wait(60)
                return
            request = "\r\n".join([lines[0], *headers, "Connection: close"]).encode("latin-1") + b"\r\n\r\n" + body
            with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60) as up:
                up.sendall(request)
                answer = b""
                while True:
                    chunk = up.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
            if fault == "drop_answer":
                client.shutdown(socket.SHUT_RDWR)
                return
            head, sep, rest = answer.partition(b"\r\n\r\n")
            lines = [l for l in head.split(b"\r\n") if not l.lower().startswith(b"connection:")]
            client.sendall(b"\r\n".join([*lines, b"Connection: close"]) + sep + rest)  # one request per connection
        except OSError:
            return
        finally:
            try:
                client.close()
            except OSError:
                pass
