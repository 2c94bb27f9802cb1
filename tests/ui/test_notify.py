"""``glanceseg serve`` under systemd's notify protocol: READY once listening, watchdog pings, STOPPING."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_notifies_ready_pings_watchdog_and_stops(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLANCESEG_")}
    env.update(NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="1000000", GLANCESEG_DATA_DIR=str(tmp_path / "data"),
               GLANCESEG_GLANCE_USE_MODEL="false")
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        messages: list[str] = []
        deadline = time.monotonic() + 60
        while not any("WATCHDOG=1" in m for m in messages) and time.monotonic() < deadline:
            messages.append(sock.recv(4096).decode())
        ready = [m for m in messages if "READY=1" in m]
        assert ready, messages
        assert messages.index(ready[0]) < next(i for i, m in enumerate(messages) if "WATCHDOG=1" in m)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            # READY meant the server really answers; the probe needs no login (no redirect).
            assert resp.status == 200 and resp.geturl().endswith("/healthz")
            assert json.loads(resp.read()) == {"ok": True}
        # What `glanceseg status` cannot see from its own process, published while serving.
        live = json.loads((tmp_path / "data" / "live.json").read_text())
        assert live["pid"] == proc.pid and live["tracker"]["kind"] == "pointer"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert not (tmp_path / "data" / "live.json").exists()  # gone with the app, not stale
        rest = []
        sock.settimeout(2)
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
        assert any("STOPPING=1" in m for m in rest), rest
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
