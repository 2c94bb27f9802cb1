"""The real waitress server: plain HTTP on loopback, TLS when configured, LAN refused without it."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import ssl

import pytest

from appliance.errors import ConfigError
from appliance.ui.app import create_app
from appliance.ui.server import build_server

from .browser import serve_in_thread


def _self_signed(tmp_path, *addresses: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "glanceseg-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(a))
                                                        for a in ("127.0.0.1", *addresses)]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "ui.crt", tmp_path / "ui.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_lan_without_tls_is_refused(ui_config):
    app = create_app(ui_config)
    with pytest.raises(ConfigError, match="only over TLS"):
        build_server(app, ui_config.replace(ui={"host": "192.168.1.20"}))


def test_tls_serves_with_secure_cookies(ui_config, tmp_path):
    cert, key = _self_signed(tmp_path)
    config = ui_config.replace(ui={"host": "127.0.0.1", "port": 0, "tls_cert": str(cert), "tls_key": str(key)})
    app = create_app(config)
    server, url, listener = build_server(app, config)
    assert url.startswith("https://127.0.0.1:")
    port = listener.getsockname()[1]
    stop = serve_in_thread(server, "ui-tls-test")
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        conn.request("GET", "/setup")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200 and b"First start" in body
        cookie = resp.getheader("Set-Cookie") or ""
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert resp.getheader("Strict-Transport-Security", "").startswith("max-age=")
        conn.close()
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            plain.request("GET", "/setup")
            plain.getresponse().read()
    finally:
        stop()
        listener.close()
        app.extensions["glanceseg_hub"].close()


def test_tls_terminator_drops_silent_connections_and_caps_them(ui_config, tmp_path, monkeypatch):
    # LAN hosts that connect and never say hello must not pile up threads until the UI stops.
    import socket
    import time

    from appliance.ui import server as server_module

    monkeypatch.setattr(server_module, "TLS_HANDSHAKE_S", 0.5)
    monkeypatch.setattr(server_module, "MAX_TLS_CONNECTIONS", 3)
    cert, key = _self_signed(tmp_path)
    config = ui_config.replace(ui={"host": "127.0.0.1", "port": 0, "tls_cert": str(cert), "tls_key": str(key)})
    app = create_app(config)
    server, _, listener = build_server(app, config)
    port = listener.getsockname()[1]
    stop = serve_in_thread(server, "ui-tls-cap")
    def dropped(s: socket.socket) -> bool:
        try:
            return s.recv(1) == b""
        except ConnectionResetError:  # a close can reach the client as a reset
            return True

    silent = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
    try:
        extra = socket.create_connection(("127.0.0.1", port), timeout=30)
        assert dropped(extra)  # over the cap: closed (at once, or once a slot's handshake time is up)
        extra.close()
        started = time.monotonic()
        for s in silent:  # each is dropped once the handshake time is up, not held for ever
            assert dropped(s)
        assert time.monotonic() - started < 20
        ctx = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200  # the slots came back
        conn.close()
    finally:
        for s in silent:
            s.close()
        stop()
        listener.close()
        app.extensions["glanceseg_hub"].close()


def _lan_address() -> str:
    """This machine's own non-loopback IPv4 address (no packet is sent), or skip."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # routing only: UDP connect sends nothing
            address = probe.getsockname()[0]
        except OSError:
            address = ""
    if not address or ipaddress.ip_address(address).is_loopback:
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


def test_login_limits_see_the_lan_clients_address_through_the_tls_terminator(ui_config, tmp_path):
    # Behind the terminator every request reached waitress from 127.0.0.1: a LAN host guessing
    # PINs was the touchscreen as far as the login limits could tell.
    import re

    import requests

    from appliance.ui.users import ADDRESS_FAILURES_PER_LOCKOUT
    from .conftest import add_users
    from .helpers import PIN

    lan = _lan_address()
    cert, key = _self_signed(tmp_path, lan)
    config = ui_config.replace(ui={"host": "0.0.0.0", "port": 0, "tls_cert": str(cert), "tls_key": str(key),
                                   "lockout_attempts": 2})
    app = create_app(config)
    add_users(config)
    server, _, listener = build_server(app, config)
    port = listener.getsockname()[1]
    stop = serve_in_thread(server, "ui-tls-peer")

    def login(host: str, name: str, pin: str) -> int:
        with requests.Session() as browser:
            page = browser.get(f"https://{host}:{port}/login", timeout=10, verify=str(cert)).text
            token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
            resp = browser.post(f"https://{host}:{port}/login", timeout=10, allow_redirects=False, verify=str(cert),
                                data={"name": name, "pin": pin, "csrf_token": token})
            return resp.status_code

    try:
        for i in range(ADDRESS_FAILURES_PER_LOCKOUT * 2):  # one wrong PIN per name: no account locked
            assert login(lan, ["admin", "clara", "tom", "nobody"][i % 4] + ("" if i < 4 else str(i)), "000000") == 401
        assert login(lan, "clara", PIN) == 401           # that LAN address is blocked...
        assert login("127.0.0.1", "clara", PIN) == 302   # ...the touchscreen is not
    finally:
        stop()
        listener.close()
        app.extensions["glanceseg_hub"].close()
