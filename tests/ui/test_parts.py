"""The UI's parts through the Flask test client: pointer gaze, decisions, sign-off, PDF, demo, sync."""

from __future__ import annotations

import io
import re

import pytest

from appliance.errors import ConfigError
from appliance.ui import build_services, create_app
from appliance.ui import i18n
from appliance.ui.demo import prepare_demo
from appliance.ui.server import is_loopback, serve
from appliance.ui.sync_panel import plain_error
from appliance.ui.users import hash_pin, verify_pin

from .helpers import DOTS, PIN, login


def _import(client, token, path, patient="P-9", eye="L"):
    resp = client.post("/import", data={"csrf_token": token, "patient_id": patient, "eye": eye, "source": "upload",
                                        "files": (io.BytesIO(path.read_bytes()), path.name)},
                       content_type="multipart/form-data")
    assert resp.status_code == 302, resp.get_data(as_text=True)


def test_pointer_gaze_decisions_signoff_and_pdf(app, fundus_png):
    client = app.test_client()
    _, token = login(client)
    _import(client, token, fundus_png)
    assert client.get("/reader/1").status_code == 200
    x, y, _ = DOTS[2]
    samples = [{"x": x + (i % 2), "y": y, "xs": 600 + (i % 2), "ys": 400, "t_ms": 1.7e12 + 10 * i, "ppd": 30}
               for i in range(30)]
    resp = client.post("/api/reader/1/gaze", json={"samples": samples}, headers={"X-CSRF-Token": token})
    assert resp.status_code == 200 and resp.get_json()["events"] >= 1
    page = client.get("/reader/1").get_data(as_text=True)
    lesions = [int(v) for v in re.findall(r'"id": (\d+)', page)]
    assert lesions, "the fixated dot produced no lesion"
    post = lambda url, body: client.post(url, json=body, headers={"X-CSRF-Token": token})  # noqa: E731
    assert post("/api/reader/1/decision", {"lesion_id": lesions[0], "decision": "accepted"}).status_code == 200
    assert post("/api/reader/1/decision", {"lesion_id": lesions[0], "decision": "bogus"}).status_code == 400
    added = post("/api/reader/1/prompt", {"x": 450, "y": 330}).get_json()
    assert added["ok"] and added["lesion"]["id"] not in lesions
    assert post("/api/reader/1/prompt", {"x": 5000, "y": 5}).status_code == 400
    results = client.get("/study/1/results").get_data(as_text=True)
    assert re.search(r'class="ma-count">2<', results)
    bad = client.post("/study/1/results", data={"csrf_token": token, "referral": "none"})
    assert bad.status_code == 400 and b"Choose a grade" in bad.data
    ok = client.post("/study/1/results", data={"csrf_token": token, "grade": "1", "maculopathy": "no",
                                               "referral": "routine"})
    assert ok.status_code == 302
    assert "Results pending sync" in client.get("/").get_data(as_text=True)
    pdf = client.get("/study/1/report.pdf").data
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    xref = int(pdf[pdf.rindex(b"startxref") + 9:].split()[0])
    assert pdf[xref:xref + 4] == b"xref"
    offsets = [int(line.split()[0]) for line in pdf[xref:].split(b"\n")[3:] if line.endswith(b" n ")]
    for n, off in enumerate(offsets, start=1):
        assert pdf[off:].startswith(f"{n} 0 obj".encode())
    assert b"Mild non-proliferative DR" in pdf and b"/DCTDecode" in pdf


def test_overlay_and_display_images(app, fundus_png):
    client = app.test_client()
    _, token = login(client)
    _import(client, token, fundus_png)
    assert client.get("/image/1/display.jpg").data[:3] == b"\xff\xd8\xff"
    assert client.get("/image/1/overlay.jpg").data[:3] == b"\xff\xd8\xff"
    assert client.get("/reader/marker/0.png").data[:4] == b"\x89PNG"
    assert client.get("/reader/marker/9.png").status_code == 404


def test_replay_rejects_bad_csv(app, fundus_png):
    client = app.test_client()
    _, token = login(client)
    _import(client, token, fundus_png)
    resp = client.post("/api/reader/1/replay", data={"gaze": (io.BytesIO(b"a,b\n1,2\n"), "g.csv")},
                       headers={"X-CSRF-Token": token}, content_type="multipart/form-data")
    assert resp.status_code == 400 and "cannot be read" in resp.get_json()["error"]


def test_demo_prepares_users_and_samples(ui_config):
    pin = prepare_demo(ui_config)
    assert re.fullmatch(r"\d{6}", pin)
    app = create_app(ui_config)
    client = app.test_client()
    login(client, "demo", pin)
    page = client.get("/").get_data(as_text=True)
    assert "DEMO-001" in page
    app.extensions["glanceseg_hub"].close()


def test_lan_requires_tls(ui_config):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("192.168.1.5")
    with pytest.raises(ConfigError, match="only over TLS"):
        serve(ui_config.replace(ui={"host": "0.0.0.0"}))


def test_sync_page_over_real_store(ui_config):
    from appliance.store.store import Store

    store = Store(ui_config)
    try:
        app = create_app(ui_config, build_services(ui_config, store=store))
        from appliance.ui import db as uidb
        from appliance.ui.users import UserStore

        conn = uidb.connect(uidb.database_path(ui_config.data_dir))
        UserStore(conn).create("admin", "admin", "1234")
        UserStore(conn).create("tom", "technician", PIN)
        conn.close()
        client = app.test_client()
        _, token = login(client, "tom", PIN)
        page = client.get("/sync").get_data(as_text=True)
        assert 'id="pending">0<' in page and "never" in page
        resp = client.post("/sync", data={"csrf_token": token})
        assert resp.status_code == 302
        assert "not running" in client.get("/sync").get_data(as_text=True)
    finally:
        store.close()


def test_plain_sync_errors():
    assert "cannot be reached" in plain_error("ConnectionError: [Errno 111] Connection refused")
    assert "credentials" in plain_error("HTTP 401 Unauthorized")
    assert "try again" in plain_error("something odd")


def test_pin_hash_is_scrypt_and_salted():
    a, b = hash_pin("1234"), hash_pin("1234")
    assert a.startswith("scrypt$") and a != b
    assert verify_pin("1234", a) and not verify_pin("1235", a)


def test_translation_catalog(tmp_path, monkeypatch):
    (tmp_path / "de.json").write_text('{"Log in": "Anmelden", "_language": "Deutsch"}')
    monkeypatch.setattr(i18n, "CATALOG_DIR", tmp_path)
    i18n.catalog.cache_clear()
    try:
        assert i18n.translate("de", "Log in") == "Anmelden"
        assert i18n.translate("de", "Worklist") == "Worklist"  # missing: English
        assert i18n.translate("fr", "Log in") == "Log in"
        with pytest.raises(ValueError):
            i18n.translate("../x", "Log in")
    finally:
        i18n.catalog.cache_clear()
