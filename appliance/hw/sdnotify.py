"""systemd service notifications (``sd_notify``) without a dependency.

``glanceseg.service`` is ``Type=notify`` with ``WatchdogSec=``: systemd starts the kiosk only
after the app says ``READY=1``, and kills and restarts the app when the ``WATCHDOG=1`` pings
stop. The protocol is one datagram of ``KEY=VALUE`` lines to the ``AF_UNIX`` socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract-namespace name written with a leading ``@``); the
watchdog period is ``$WATCHDOG_USEC`` microseconds, and systemd's own advice is to ping at
half of it.

A ping must mean "the main loop still runs", not "some thread is alive": a watchdog thread
that pings unconditionally keeps a deadlocked app alive forever. :class:`WatchdogThread`
therefore pings only while a heartbeat callable says the main loop made progress, and
:class:`Heartbeat` is that callable: the main loop calls :meth:`Heartbeat.beat` once per
iteration.

Outside systemd (``$NOTIFY_SOCKET`` unset: tests, a laptop) every call is a no-op returning
``False``, so the app needs no special case. A failed send is logged, never raised: the
appliance must not crash because its supervisor is unreachable.

The systemd variables are part of the service-manager protocol, not configuration; to keep
to the rule that only ``appliance/config.py`` reads the environment, the caller passes the
environment mapping in (:meth:`Notifier.from_environ`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, Mapping, Optional

logger = logging.getLogger(__name__)

__all__ = ["Heartbeat", "Notifier", "WatchdogThread", "http_probe"]


def _socket_address(notify_socket: str) -> str:
    """Translate ``$NOTIFY_SOCKET`` into an address for ``socket.sendto``.

    Parameters
    ----------
    notify_socket
        A filesystem path (``/run/systemd/notify``) or an abstract-namespace name with a
        leading ``@`` (what systemd writes for abstract sockets).

    Returns
    -------
    str
        The path, or the name with a leading NUL byte (Linux abstract namespace).

    Raises
    ------
    ValueError
        If the value is neither a path nor an ``@`` name (e.g. a ``vsock:`` address, which
        systemd uses only for virtual machines).
    """
    if notify_socket.startswith("@"):
        return "\0" + notify_socket[1:]
    if notify_socket.startswith("/"):
        return notify_socket
    raise ValueError(f"NOTIFY_SOCKET={notify_socket!r} is neither a socket path nor an @abstract name.")


class Notifier:
    """Send ``sd_notify`` messages to the service manager.

    Parameters
    ----------
    notify_socket
        The value of ``$NOTIFY_SOCKET``; ``None`` or empty disables every message.
    watchdog_usec
        The value of ``$WATCHDOG_USEC`` (microseconds); ``None`` or 0 disables the watchdog.
    watchdog_pid
        The value of ``$WATCHDOG_PID``; when set and not this process's id, the watchdog is
        meant for another process and is disabled here (``sd_watchdog_enabled`` semantics).
    clock
        Monotonic clock in seconds (tests may inject one).

    Raises
    ------
    ValueError
        If ``notify_socket`` is not a path or ``@`` name, or ``watchdog_usec`` is negative.
    """

    def __init__(
        self,
        notify_socket: Optional[str] = None,
        watchdog_usec: Optional[int] = None,
        watchdog_pid: Optional[int] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address = _socket_address(notify_socket) if notify_socket else None
        if watchdog_usec is not None and watchdog_usec < 0:
            raise ValueError(f"WATCHDOG_USEC must be >= 0, not {watchdog_usec}.")
        if watchdog_pid is not None and watchdog_pid != os.getpid():
            watchdog_usec = None
        self._watchdog_usec = watchdog_usec or 0
        self._clock = clock
        self._last_ping: Optional[float] = None
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "Notifier":
        """Build a notifier from the service manager's variables.

        Parameters
        ----------
        environ
            The process environment (the caller passes ``os.environ``).

        Returns
        -------
        Notifier
            Enabled when ``NOTIFY_SOCKET`` is set; a malformed ``WATCHDOG_USEC`` or
            ``WATCHDOG_PID`` disables the watchdog with a warning rather than stop the app.
        """
        usec: Optional[int] = None
        pid: Optional[int] = None
        try:
            if environ.get("WATCHDOG_USEC"):
                usec = int(environ["WATCHDOG_USEC"])
            if environ.get("WATCHDOG_PID"):
                pid = int(environ["WATCHDOG_PID"])
        except ValueError:
            logger.warning("malformed WATCHDOG_USEC/WATCHDOG_PID; systemd watchdog disabled")
            usec, pid = None, None
        try:
            return cls(environ.get("NOTIFY_SOCKET") or None, usec, pid)
        except ValueError as exc:
            logger.warning("%s; service notifications disabled", exc)
            return cls(None)

    @property
    def enabled(self) -> bool:
        """bool: Whether a service manager listens (``$NOTIFY_SOCKET`` was set)."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> Optional[float]:
        """float or None: Seconds between pings (half of ``WATCHDOG_USEC``); None if off."""
        if not self.enabled or self._watchdog_usec <= 0:
            return None
        return self._watchdog_usec / 2e6

    def notify(self, message: str) -> bool:
        """Send one raw notification datagram (newline-separated ``KEY=VALUE`` lines).

        Parameters
        ----------
        message
            The datagram text, e.g. ``"READY=1\\nSTATUS=listening"``.

        Returns
        -------
        bool
            True when the datagram was sent; False when disabled or the send failed.
        """
        if self._address is None:
            return False
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(message.encode("utf-8"), self._address)
            except OSError as exc:
                logger.warning("sd_notify failed (%s): %s", message.split("\n", 1)[0], exc)
                return False
        logger.debug("sd_notify %s", message.replace("\n", " "))
        return True

    def ready(self, status: Optional[str] = None) -> bool:
        """Tell systemd the service is up (``READY=1``); call once the server listens."""
        return self.notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status`` (``STATUS=``)."""
        return self.notify(f"STATUS={_one_line(text)}")

    def stopping(self, status: Optional[str] = None) -> bool:
        """Tell systemd a clean shutdown has begun (``STOPPING=1``)."""
        return self.notify("STOPPING=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def watchdog_due(self) -> bool:
        """bool: Whether a watchdog ping is due (never pinged, or half the period has passed)."""
        interval = self.watchdog_interval_s
        if interval is None:
            return False
        return self._last_ping is None or self._clock() - self._last_ping >= interval

    def ping(self) -> bool:
        """Send ``WATCHDOG=1``: the main loop is alive. Only the main loop should call this."""
        if self.watchdog_interval_s is None:
            return False
        sent = self.notify("WATCHDOG=1")
        if sent:
            self._last_ping = self._clock()
        return sent

    def close(self) -> None:
        """Close the socket; later calls reopen it."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> "Notifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class Heartbeat:
    """Progress counter the main loop bumps; true once per beat when called.

    Calling the object answers "did the main loop beat since the last call?", so a
    :class:`WatchdogThread` polling it pings only when the loop made progress during the
    last interval. The main loop must therefore beat more often than the ping interval
    (half of ``WatchdogSec``).
    """

    def __init__(self) -> None:
        self._beats = 0
        self._seen = 0
        self._lock = threading.Lock()

    def beat(self) -> None:
        """Record one iteration of the main loop (cheap; call it every iteration)."""
        with self._lock:
            self._beats += 1

    @property
    def beats(self) -> int:
        """int: Beats recorded so far."""
        return self._beats

    def __call__(self) -> bool:
        with self._lock:
            progressed = self._beats != self._seen
            self._seen = self._beats
        return progressed


def http_probe(url: str, timeout_s: float) -> Callable[[], bool]:
    """Build a heartbeat that asks the app's own HTTP server whether it still answers.

    For a server whose main loop is a library's (waitress) and cannot call
    :meth:`Heartbeat.beat` itself: the probe succeeds only when a request to ``url`` returns
    2xx within ``timeout_s``, so hung request workers or a deadlocked handler stop the pings
    just as a hung loop does. Use a cheap endpoint (``/healthz``) and a ``timeout_s`` below
    the ping interval.

    Parameters
    ----------
    url
        Loopback URL of a cheap endpoint, e.g. ``http://127.0.0.1:8080/healthz``.
    timeout_s
        Seconds to wait for the answer.

    Returns
    -------
    callable
        ``() -> bool`` suitable as the ``heartbeat`` of :class:`WatchdogThread`.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, not {timeout_s}.")

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback
                return 200 <= resp.status < 300
        except (OSError, urllib.error.URLError) as exc:
            logger.debug("watchdog probe %s failed: %s", url, exc)
            return False

    return probe


class WatchdogThread:
    """Named daemon thread that pings the systemd watchdog while the main loop is alive.

    Parameters
    ----------
    notifier
        Where the pings go; when its watchdog is off, :meth:`start` does nothing.
    heartbeat
        Called once per interval; the thread pings only when it returns True. A
        :class:`Heartbeat` is the usual choice.
    interval_s
        Seconds between checks; defaults to the notifier's (half of ``WATCHDOG_USEC``).

    Notes
    -----
    Counters :attr:`checks`, :attr:`pings` and :attr:`missed` let a test wait for the
    thread's progress instead of sleeping for a fixed time.
    """

    def __init__(
        self,
        notifier: Notifier,
        heartbeat: Callable[[], bool],
        interval_s: Optional[float] = None,
    ) -> None:
        if interval_s is not None and interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, not {interval_s}.")
        self._notifier = notifier
        self._heartbeat = heartbeat
        self._interval_s = interval_s if interval_s is not None else notifier.watchdog_interval_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._cond = threading.Condition()
        self.checks = 0
        self.pings = 0
        self.missed = 0

    @property
    def running(self) -> bool:
        """bool: Whether the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start pinging; returns False (and starts nothing) when the watchdog is off."""
        if self._interval_s is None or not self._notifier.enabled:
            logger.info("systemd watchdog not requested; no watchdog thread")
            return False
        if self.running:
            return True
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()
        logger.info("systemd watchdog: checking the main loop every %.1f s", self._interval_s)
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and wait up to ``timeout_s`` for it to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wait_checks(self, count: int, timeout_s: float) -> bool:
        """Wait until :attr:`checks` reaches ``count``; True if it did within ``timeout_s``."""
        with self._cond:
            return self._cond.wait_for(lambda: self.checks >= count, timeout_s)

    def _run(self) -> None:
        interval_s = self._interval_s or 1.0  # start() guarantees it is set
        stalled = False
        while not self._stop.wait(interval_s):
            try:
                alive = bool(self._heartbeat())
            except Exception:  # a broken heartbeat must read as "not alive", not kill the thread
                logger.exception("watchdog heartbeat raised; treating the main loop as hung")
                alive = False
            if alive:
                if self._notifier.ping():
                    self.pings += 1
                if stalled:
                    logger.warning("main loop beats again; watchdog pings resumed")
                stalled = False
            else:
                self.missed += 1
                if not stalled:
                    logger.error("main loop missed its heartbeat; withholding watchdog pings")
                stalled = True
            with self._cond:
                self.checks += 1
                self._cond.notify_all()

    def __enter__(self) -> "WatchdogThread":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
