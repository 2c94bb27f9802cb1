"""The sd_notify / watchdog exchange over a real AF_UNIX datagram socket.

A receiving socket stands in for systemd: it is bound where ``NOTIFY_SOCKET`` points, and
the tests read exactly the datagrams systemd would get.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from appliance.hw.sdnotify import Heartbeat, Notifier, WatchdogThread


class Manager:
    """The service-manager side: a bound datagram socket and its received messages."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address if not address.startswith("@") else "\0" + address[1:])

    def recv(self, timeout_s: float = 10.0) -> str:
        self.sock.settimeout(timeout_s)
        return self.sock.recv(4096).decode()

    def drain(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    m = Manager(str(tmp_path / "notify.sock"))
    yield m
    m.close()


@pytest.fixture
def abstract_manager() -> Iterator[Manager]:
    m = Manager(f"@glanceseg-test-{uuid.uuid4().hex}")
    yield m
    m.close()


def test_ready_status_stopping_over_a_path_socket(manager: Manager) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": manager.address})
    assert n.enabled
    assert n.ready("listening on 127.0.0.1:8080")
    assert manager.recv() == "READY=1\nSTATUS=listening on 127.0.0.1:8080"
    assert n.status("sync:\n3 pending")
    assert manager.recv() == "STATUS=sync: 3 pending"
    assert n.stopping()
    assert manager.recv() == "STOPPING=1"
    n.close()


def test_abstract_namespace_socket(abstract_manager: Manager) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": abstract_manager.address})
    assert n.ready()
    assert abstract_manager.recv() == "READY=1"


def test_disabled_without_notify_socket() -> None:
    n = Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled
    assert not n.ready()
    assert not n.watchdog_due()
    assert not n.ping()
    assert not WatchdogThread(n, Heartbeat()).start()


def test_watchdog_for_another_pid_is_ignored(manager: Manager) -> None:
    env = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    n = Notifier.from_environ(env)
    assert n.watchdog_interval_s is None
    assert not n.ping()
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier.from_environ(env).watchdog_interval_s == pytest.approx(0.5)


def test_unreachable_socket_is_logged_not_raised(tmp_path: Path) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert not n.ready()


def test_bad_values_disable_rather_than_crash() -> None:
    assert not Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    n = Notifier.from_environ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "soon"})
    assert n.enabled and n.watchdog_interval_s is None
    with pytest.raises(ValueError):
        Notifier("/run/x", watchdog_usec=-1)


def test_watchdog_due_follows_half_the_period(manager: Manager) -> None:
    now = [100.0]
    n = Notifier(manager.address, watchdog_usec=10_000_000, clock=lambda: now[0])
    assert n.watchdog_interval_s == pytest.approx(5.0)
    assert n.watchdog_due()
    assert n.ping()
    assert manager.recv() == "WATCHDOG=1"
    now[0] += 4.9
    assert not n.watchdog_due()
    now[0] += 0.2
    assert n.watchdog_due()


def test_heartbeat_reports_progress_once_per_beat() -> None:
    hb = Heartbeat()
    assert not hb()
    hb.beat()
    hb.beat()
    assert hb()
    assert not hb()


def test_hung_main_loop_stops_the_pings(manager: Manager) -> None:
    """A main loop beats; it hangs; the pings stop; it resumes; they come back."""
    n = Notifier.from_environ({"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "40000"})
    assert n.watchdog_interval_s == pytest.approx(0.02)
    heartbeat = Heartbeat()
    running = threading.Event()
    running.set()
    quit_ = threading.Event()
    hung = threading.Event()

    def main_loop() -> None:
        while not quit_.is_set():
            if not running.is_set():
                hung.set()
                running.wait()  # the "hang": blocked, no beats
                hung.clear()
            heartbeat.beat()
            quit_.wait(0.002)

    loop = threading.Thread(target=main_loop, name="fake-main-loop", daemon=True)
    loop.start()
    dog = WatchdogThread(n, heartbeat)
    try:
        assert dog.start()
        assert dog.running
        # Alive: pings arrive.
        for _ in range(3):
            assert manager.recv() == "WATCHDOG=1"

        # Hang the loop; at most one in-flight ping may still arrive after the hang began.
        running.clear()
        assert hung.wait(10)
        start = dog.checks
        assert dog.wait_checks(start + 2, 10)
        manager.drain()
        missed_before, checks_before = dog.missed, dog.checks
        assert dog.wait_checks(checks_before + 5, 10)
        assert manager.drain() == []
        assert dog.missed >= missed_before + 5

        # Resume: pings come back.
        running.set()
        assert manager.recv() == "WATCHDOG=1"
    finally:
        quit_.set()
        running.set()
        dog.stop()
        loop.join(5)
    assert not dog.running


def test_child_process_notifies_from_its_environment(manager: Manager) -> None:
    """The variables as systemd sets them, read by a separate process."""
    code = (
        "import os\n"
        "from appliance.hw.sdnotify import Notifier\n"
        "n = Notifier.from_environ(os.environ)\n"
        "assert n.watchdog_interval_s == 15.0\n"
        "n.ready('up'); n.ping()\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "30000000"}
    env.pop("WATCHDOG_PID", None)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert manager.recv() == "READY=1\nSTATUS=up"
    assert manager.recv() == "WATCHDOG=1"


def test_http_probe_pings_only_while_the_server_answers(manager: Manager) -> None:
    """A real loopback HTTP server as the heartbeat: answering -> pings; a hung handler -> none."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from appliance.hw.sdnotify import http_probe

    release = threading.Event()
    hang = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if hang.is_set():
                release.wait(10)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="probe-server", daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    n = Notifier.from_environ({"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "100000"})
    dog = WatchdogThread(n, http_probe(url, timeout_s=0.2))
    try:
        assert dog.start()
        assert manager.recv() == "WATCHDOG=1"
        hang.set()
        assert dog.wait_checks(dog.checks + 2, 10)
        manager.drain()
        start = dog.checks
        assert dog.wait_checks(start + 3, 10)
        assert manager.drain() == []
        hang.clear()
        release.set()
        assert manager.recv() == "WATCHDOG=1"
    finally:
        release.set()
        dog.stop()
        server.shutdown()
        server.server_close()
    assert not http_probe("http://127.0.0.1:9/", timeout_s=0.2)()
