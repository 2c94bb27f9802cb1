"""Serving the UI with waitress: loopback by default, the clinic LAN only over TLS.

waitress speaks plain HTTP only. When ``[ui] tls_cert`` and ``tls_key`` are set (required for
any non-loopback address), waitress listens on a free loopback port and a small TLS terminator
in this process (:mod:`ssl`, TLS 1.2+, one forwarding thread pair per connection) presents the
certificate on ``[ui] host:port``; session cookies are then marked Secure.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from appliance.config import Config
from appliance.errors import ConfigError
from appliance.sync.dicomweb import is_loopback

logger = logging.getLogger(__name__)

#: Seconds a client has to complete the TLS handshake: a connection that never sends its
#: ClientHello would otherwise hold a thread forever.
TLS_HANDSHAKE_S = 10.0
#: Open TLS connections at most; more are closed at once, so no LAN host can exhaust threads.
MAX_TLS_CONNECTIONS = 64


class PeerAddresses:
    """Which LAN address each of the TLS terminator's loopback connections carries.

    Why: behind the terminator every request reaches waitress from 127.0.0.1, so the login
    limits could not tell a LAN host guessing PINs from the touchscreen. The terminator
    records the local port of each upstream connection it opens with the client's address;
    :meth:`wrap` puts that address in ``REMOTE_ADDR``. A request that did not come through
    the terminator (a local process on waitress's port) keeps its own address.
    """

    def __init__(self) -> None:
        self._by_port: dict[int, str] = {}
        self._lock = threading.Lock()

    def add(self, local_port: int, peer: str) -> None:
        with self._lock:
            self._by_port[local_port] = peer

    def remove(self, local_port: int) -> None:
        with self._lock:
            self._by_port.pop(local_port, None)

    def wrap(self, app: Callable) -> Callable:
        """Return ``app`` as a WSGI callable that sees the client's own address."""

        def with_peer(environ: dict, start_response: Callable) -> Any:
            if environ.get("REMOTE_ADDR") == "127.0.0.1":
                try:
                    port = int(environ.get("REMOTE_PORT") or 0)
                except ValueError:
                    port = 0
                with self._lock:
                    peer = self._by_port.get(port)
                if peer is not None:
                    environ["REMOTE_ADDR"] = peer
            return app(environ, start_response)

        return with_peer


def make_server(app: Any, host: str, port: int, threads: int = 12) -> Any:
    """Create (not start) a waitress server; ``port=0`` picks a free port (``server.effective_port``)."""
    from waitress.server import create_server

    return create_server(app, host=host, port=port, threads=threads, channel_timeout=3600,
                         ident="glanceseg", clear_untrusted_proxy_headers=True)


def _tls_proxy(listen_host: str, listen_port: int, target_port: int, cert: str, key: str,
               peers: PeerAddresses) -> socket.socket:
    """Accept TLS on ``listen_host:listen_port`` and forward bytes to ``127.0.0.1:target_port``.

    Each upstream connection's local port is recorded in ``peers`` with the client's address
    for as long as it is open.

    Returns the listening socket (``getsockname()[1]`` is the port; close it to stop).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server((listen_host, listen_port))

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    slots = threading.BoundedSemaphore(MAX_TLS_CONNECTIONS)

    def handle(raw: socket.socket, peer: str) -> None:
        local_port = 0
        try:
            raw.settimeout(TLS_HANDSHAKE_S)
            try:
                conn = ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                logger.warning("TLS handshake failed: %s", exc)
                raw.close()
                return
            conn.settimeout(None)  # an event stream may stay quiet for long
            try:
                upstream = socket.create_connection(("127.0.0.1", target_port))
            except OSError as exc:
                logger.error("the UI server does not answer on port %d: %s", target_port, exc)
                conn.close()
                return
            local_port = upstream.getsockname()[1]
            peers.add(local_port, peer)  # before any byte of the request reaches waitress
            down = threading.Thread(target=pipe, args=(upstream, conn), name="tls-down", daemon=True)
            down.start()
            pipe(conn, upstream)
            down.join()
        finally:
            if local_port:
                peers.remove(local_port)
            slots.release()

    def accept() -> None:
        while True:
            try:
                raw, address = listener.accept()
            except OSError:  # listener closed
                return
            if not slots.acquire(blocking=False):
                logger.warning("%d TLS connections open; refusing another", MAX_TLS_CONNECTIONS)
                raw.close()
                continue
            threading.Thread(target=handle, args=(raw, str(address[0])), name="tls-conn", daemon=True).start()

    threading.Thread(target=accept, name="tls-listener", daemon=True).start()
    return listener


def build_server(app: Any, config: Config) -> tuple[Any, str, Optional[socket.socket]]:
    """Create the waitress server for ``config.ui`` (and the TLS terminator when configured).

    Returns
    -------
    (server, url, tls_listener)
        Call ``server.run()`` to serve; ``url`` is where browsers connect.

    Raises
    ------
    ConfigError
        If a non-loopback host is configured without a TLS certificate and key.
    """
    ui = config.ui
    tls = bool(ui.tls_cert and ui.tls_key)
    if not is_loopback(ui.host) and not tls:
        raise ConfigError(f"The UI may listen on {ui.host} (the clinic LAN) only over TLS: set [ui] tls_cert and tls_key.")
    if not tls:
        server = make_server(app, ui.host, ui.port, ui.threads)
        return server, f"http://{ui.host}:{server.effective_port}/", None
    peers = PeerAddresses()
    server = make_server(peers.wrap(app), "127.0.0.1", 0, ui.threads)
    try:
        listener = _tls_proxy(ui.host, ui.port, server.effective_port, ui.tls_cert, ui.tls_key, peers)
    except (OSError, ssl.SSLError) as exc:
        server.close()
        raise ConfigError(f"Cannot serve TLS on {ui.host}:{ui.port} with {ui.tls_cert}: {exc}.") from exc
    return server, f"https://{ui.host}:{listener.getsockname()[1]}/", listener


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def serve(config: Config, demo: bool = False, services: Optional[Any] = None,
          services_factory: Optional[Callable[[Config], Any]] = None, notifier: Optional[Any] = None) -> None:
    """Run the UI until interrupted (``glanceseg serve``).

    Parameters
    ----------
    config
        The configuration; ``ui.host`` / ``ui.port`` say where to listen.
    demo
        Use a throwaway data folder with the sample photographs and a demo clinician whose PIN
        is printed (:mod:`appliance.ui.demo`).
    services
        Prebuilt services (the lead's wiring); defaults from ``config``.
    services_factory
        ``config -> Services``, called after ``--demo`` has chosen its data folder (used when
        ``services`` is None; default :func:`appliance.ui.services.build_services`).
    notifier
        A :class:`appliance.hw.sdnotify.Notifier` (systemd ``Type=notify``): READY once the
        server listens, then watchdog pings while ``/healthz`` answers, so a hung server is
        restarted by systemd.

    Raises
    ------
    ConfigError
        If a non-loopback host is configured without a TLS certificate and key.
    """
    from appliance.ui.app import create_app
    from appliance.ui.services import build_services

    tmp: Optional[str] = None
    ui = config.ui
    if not is_loopback(ui.host) and not (ui.tls_cert and ui.tls_key):  # refuse before any demo work
        raise ConfigError(f"The UI may listen on {ui.host} (the clinic LAN) only over TLS: set [ui] tls_cert and tls_key.")
    if demo:
        from appliance.ui.demo import prepare_demo

        tmp = tempfile.mkdtemp(prefix="glanceseg-demo-")
        config = config.replace(data={"dir": tmp}, ui={"import_roots": str(Path(tmp) / "usb")})
    if services is None:
        services = (services_factory or build_services)(config)
    if demo:
        pin = prepare_demo(config, services)
        print(f"Demo mode: data in {tmp} (deleted on exit); the sample photographs are being analysed.")
        print(f"Log in as 'demo' (clinician) with PIN {pin}; admin PIN {pin[::-1]}.")
    app = create_app(config, services)
    server, url, listener = build_server(app, config)
    print(f"GlanceSeg UI on {url}")
    from appliance.ui.live_state import LiveStatePublisher

    publisher = LiveStatePublisher(config.data_dir, services.live_snapshot).start()
    watchdog = None
    if notifier is not None and notifier.enabled:
        from appliance.hw.sdnotify import WatchdogThread, http_probe

        # waitress itself always listens on loopback (behind the TLS terminator when there is one).
        host = "127.0.0.1" if listener is not None else config.ui.host
        host = f"[{host}]" if ":" in host else host
        heartbeat = http_probe(f"http://{host}:{server.effective_port}/healthz", 5.0)
        notifier.ready(f"listening on {url}")
        watchdog = WatchdogThread(notifier, heartbeat)
        watchdog.start()
    if threading.current_thread() is threading.main_thread():
        # systemd stops with SIGTERM: leave through the finally below (demo folder removed).
        signal.signal(signal.SIGTERM, _raise_exit)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        if notifier is not None and notifier.enabled:
            notifier.stopping("stopping")
        if watchdog is not None:
            watchdog.stop()
        publisher.stop()
        app.extensions["glanceseg_hub"].close()
        services.close()
        server.close()
        if listener is not None:
            listener.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
