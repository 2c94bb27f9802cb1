"""The real waitress server: plain HTTP on loopback, TLS when configured, LAN refused without it."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import ssl
import threading

import pytest

from appliance.errors import ConfigError
from appliance.ui.app import create_app
from appliance.ui.server import build_server


def _self_signed(tmp_path):
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
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
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
    t = threading.Thread(target=server.run, name="ui-tls-test", daemon=True)
    t.start()
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
        server.close()
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
    threading.Thread(target=server.run, name="ui-tls-cap", daemon=True).start()
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
        server.close()
        listener.close()
        app.extensions["glanceseg_hub"].close()
