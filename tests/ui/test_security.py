"""Security of the UI through the Flask test client: login, lockout, CSRF, roles, uploads."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import pytest

from appliance.ui.app import create_app
from appliance.store import db as store_db
from appliance.ui.audit import AuditLog
from .helpers import ADMIN_PIN, PIN, csrf_of, login


@pytest.mark.parametrize("path", ["/", "/import", "/reader/1", "/study/1/results", "/study/1/report.pdf",
                                  "/sync", "/device", "/admin/users", "/admin/audit", "/image/1/display.jpg"])
def test_no_access_without_login(app, path):
    resp = app.test_client().get(path)
    assert resp.status_code == 302
    assert "/login" in resp.headers["Location"]


def test_api_without_login_is_401(app):
    resp = app.test_client().post("/api/reader/1/decision", json={"lesion_id": 1, "decision": "accepted"})
    assert resp.status_code in (400, 401)  # no session: no CSRF token and no user


def test_first_start_asks_for_admin_pin(ui_config):
    client = create_app(ui_config).test_client()
    resp = client.get("/")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/setup")
    token = csrf_of(client.get("/setup").get_data(as_text=True))
    bad = client.post("/setup", data={"name": "admin", "pin": "12", "pin2": "12", "csrf_token": token})
    assert b"4 to 12 digits" in bad.data
    client.post("/setup", data={"name": "admin", "pin": "9876", "pin2": "9876", "csrf_token": token})
    assert client.get("/setup").headers["Location"].endswith("/login")
    _, _ = login(client, "admin", "9876")
    assert client.get("/admin/users").status_code == 200


def test_login_and_wrong_pin(app):
    client = app.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"name": "clara", "pin": "000000", "csrf_token": token})
    assert resp.status_code == 401 and b"Wrong name or PIN" in resp.data
    resp, _ = login(client)
    assert resp.status_code == 302
    assert client.get("/").status_code == 200


def test_lockout_after_repeated_failures(app):
    client = app.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    for _ in range(3):
        client.post("/login", data={"name": "clara", "pin": "111111", "csrf_token": token})
    resp = client.post("/login", data={"name": "clara", "pin": PIN, "csrf_token": token})
    assert resp.status_code == 401 and b"locked" in resp.data
    assert client.get("/").status_code == 302  # still not logged in
    # A name that does not exist gets the same page: the lockout does not reveal who has an account.
    for _ in range(4):
        unknown = client.post("/login", data={"name": "nosuchuser", "pin": "111111", "csrf_token": token})
    assert unknown.status_code == 401
    flash = lambda r: r.get_data(as_text=True).split('class="flash')[1].split("</")[0]  # noqa: E731
    assert flash(unknown) == flash(resp)


@pytest.mark.parametrize("target", ["/\t/evil.example", "/%09/evil.example", "//evil.example", "/\\evil.example",
                                    "https://evil.example/", "/\n/x", "/ /evil.example"])
def test_login_never_redirects_off_site(app, target):
    client = app.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"name": "clara", "pin": PIN, "csrf_token": token, "next": target})
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert not location.startswith("//") and urlsplit(location).netloc in ("", "localhost"), location


def test_csrf_rejected(app):
    client = app.test_client()
    _, token = login(client)
    for sent in (None, "forged-token"):
        data = {"patient_id": "P1", "eye": "R", "source": "upload"}
        if sent:
            data["csrf_token"] = sent
        resp = client.post("/import", data=data)
        assert resp.status_code == 400
        assert b"did not come from this appliance" in resp.data
    resp = client.post("/api/reader/1/decision", json={"lesion_id": 1, "decision": "accepted"},
                       headers={"X-CSRF-Token": "nope"})
    assert resp.status_code == 400
    assert client.post("/login", data={"name": "clara", "pin": PIN}).status_code == 400


def test_idle_logoff(app):
    app.config["GLANCESEG"] = app.config["GLANCESEG"].replace(ui={"idle_logout_s": 0.0})
    client = app.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    assert client.post("/login", data={"name": "clara", "pin": PIN, "csrf_token": token}).status_code == 302
    resp = client.get("/device")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def _cookie_copy(client, app):
    """A second browser holding a copy of ``client``'s session cookie (a lifted or shared cookie)."""
    cookie = client.get_cookie(app.config.get("SESSION_COOKIE_NAME", "session"))
    assert cookie is not None
    other = app.test_client()
    other.set_cookie(cookie.key, cookie.value)
    return other


def test_logging_out_ends_the_session_for_every_copy_of_its_cookie(app):
    client = app.test_client()
    login(client)
    copy = _cookie_copy(client, app)
    assert copy.get("/device").status_code == 200
    client.post("/logout")
    resp = copy.get("/device")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_a_new_pin_or_disabling_a_user_ends_their_open_sessions(app):
    clara, carl = app.test_client(), app.test_client()
    login(clara)
    login(carl, "tom", PIN)
    admin = app.test_client()
    _, token = login(admin, "admin", ADMIN_PIN)
    with app.app_context():
        from appliance.ui.app import get_users
        users = get_users()
        users.set_pin(users.by_name("clara").id, "24680")
    assert clara.get("/device").status_code == 302
    assert carl.get("/device").status_code == 200
    with app.app_context():
        from appliance.ui.app import get_users
        carl_id = get_users().by_name("tom").id
    admin.post("/admin/users", data={"csrf_token": token, "action": "disable", "user_id": str(carl_id)})
    resp = carl.get("/device")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert admin.get("/device").status_code == 200


def test_one_network_address_cannot_spray_pins_across_accounts(ui_config):
    # A wrong PIN or two per account stays under the account lockout (3 here); a LAN host trying
    # every account must still be stopped, while the touchscreen (loopback) and other hosts log in.
    from appliance.store import db as store_db
    from appliance.ui.users import ADDRESS_FAILURES_PER_LOCKOUT, LoginOutcome, UserStore

    ui_config.data_dir.mkdir(parents=True, exist_ok=True)
    conn = store_db.open_database(ui_config.data_dir)
    users = UserStore(conn, lockout_attempts=3, lockout_s=300.0)
    names = [f"user{i}" for i in range(ADDRESS_FAILURES_PER_LOCKOUT * 3)]
    for name in names + ["clara"]:
        users.create(name, "clinician", PIN)
    t0 = 1_800_000_000.0
    for i, name in enumerate(names):  # one wrong PIN each: no account comes near its lockout
        assert users.authenticate(name, "000000", remote="192.0.2.7", now_s=t0 + i)[0] is LoginOutcome.BAD
    now = t0 + 100
    assert users.authenticate("clara", PIN, remote="192.0.2.7", now_s=now)[0] is LoginOutcome.LOCKED
    assert users.authenticate("clara", PIN, remote="192.0.2.8", now_s=now)[0] is LoginOutcome.OK
    assert users.authenticate("clara", PIN, remote="127.0.0.1", now_s=now)[0] is LoginOutcome.OK
    later = t0 + len(names) + 301  # the failures have aged out of the lockout period
    assert users.authenticate("clara", PIN, remote="192.0.2.7", now_s=later)[0] is LoginOutcome.OK
    for k in range(ADDRESS_FAILURES_PER_LOCKOUT * 3):  # typos at the touchscreen never block it
        users.authenticate(names[k % len(names)], "000000", remote="127.0.0.1", now_s=later + 1)
        users.unlock(users.by_name(names[k % len(names)]).id)
    assert users.authenticate("clara", PIN, remote="127.0.0.1", now_s=later + 2)[0] is LoginOutcome.OK
    conn.close()


def test_the_readers_own_polls_do_not_keep_an_unattended_session_alive(app):
    import time

    app.config["GLANCESEG"] = app.config["GLANCESEG"].replace(ui={"idle_logout_s": 1.0})
    client = app.test_client()
    login(client)
    for _ in range(3):  # the tracker badge polls every few seconds while nobody touches the page
        time.sleep(0.45)
        client.get("/api/reader/1/tracker")
    resp = client.get("/device")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_bad_user_id_in_the_admin_form_is_a_400(app):
    client = app.test_client()
    _, token = login(client, "admin", ADMIN_PIN)
    resp = client.post("/admin/users", data={"csrf_token": token, "action": "disable", "user_id": "abc"})
    assert resp.status_code == 400


def test_roles(app):
    client = app.test_client()
    login(client, "tom", PIN)
    assert client.get("/admin/audit").status_code == 403
    assert client.get("/reader/1").status_code == 403
    assert client.get("/import").status_code == 200


def _upload(client, token, name, data):
    return client.post("/import", data={"csrf_token": token, "patient_id": "P-001", "eye": "R", "source": "upload",
                                        "files": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def test_upload_accepts_photograph(app, services, fundus_png):
    client = app.test_client()
    _, token = login(client)
    resp = _upload(client, token, "fundus_a.png", fundus_png.read_bytes())
    assert resp.status_code == 302
    assert services.analysis.wait_idle(300)
    page = client.get("/").get_data(as_text=True)
    assert "P-001" in page and "fundus_a.png" in page and "New" in page
    (study,) = services.store.worklist()
    assert study.patient_id == "P-001" and study.eye == "R" and not study.reviewed
    assert services.store.get_result(study.auto_result_id).mode == "scan"


def test_the_browser_copies_of_a_photograph_are_owner_only(app, services, fundus_png, ui_config):
    """The display and thumbnail JPEGs are the patient's photograph: 0600 in 0700 folders, as
    every file of the store, whatever the process umask (they were 0644 in 0755 folders)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        client = app.test_client()
        _, token = login(client)
        assert _upload(client, token, "fundus_a.png", fundus_png.read_bytes()).status_code == 302
        assert services.analysis.wait_idle(300)
        for kind, folder in (("display", "display"), ("thumb", "thumbs")):
            assert client.get(f"/image/1/{kind}.jpg").status_code == 200  # the only photograph
            copies = list((ui_config.data_dir / folder).glob("*.jpg"))
            assert copies, folder
            assert stat.S_IMODE((ui_config.data_dir / folder).stat().st_mode) == 0o700, folder
            assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in copies), folder
    finally:
        os.umask(old)


def test_upload_rejects_non_image(app):
    client = app.test_client()
    _, token = login(client)
    resp = _upload(client, token, "notes.png", b"this is not a photograph at all" * 10)
    assert resp.status_code == 400
    assert "cannot be used" in resp.get_data(as_text=True)
    resp = _upload(client, token, "tool.exe", b"MZ\x90\x00")
    assert resp.status_code == 400 and "is not a photograph" in resp.get_data(as_text=True)


def test_upload_rejects_oversize(app):
    client = app.test_client()
    _, token = login(client)
    resp = _upload(client, token, "big.png", b"\x89PNG" + b"\0" * (3 * 2 ** 20))
    assert resp.status_code == 413
    assert "too large" in resp.get_data(as_text=True) and "2 MB" in resp.get_data(as_text=True)


@pytest.mark.parametrize("name", ["../../etc/passwd.png", "..\\evil.png", "/abs/x.png", ".hidden.png"])
def test_upload_rejects_traversal_name(app, services, fundus_png, name):
    client = app.test_client()
    _, token = login(client)
    resp = _upload(client, token, name, fundus_png.read_bytes())
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert "not allowed" in text and "without folders" in text
    assert not services.analysis.jobs() and not services.store.worklist()


def test_folder_import_stays_in_roots(app, services, ui_config, fundus_png, tmp_path):
    client = app.test_client()
    _, token = login(client)
    outside = tmp_path / "outside"
    outside.mkdir()
    resp = client.post("/import", data={"csrf_token": token, "patient_id": "P-2", "eye": "L", "source": "folder",
                                        "folder": str(outside)})
    assert resp.status_code == 400 and "only be imported from a USB stick" in resp.get_data(as_text=True)
    usb = tmp_path / "usb"
    (usb / "stick").mkdir()
    (usb / "stick" / "a.png").write_bytes(fundus_png.read_bytes())
    (usb / "stick" / "link.png").symlink_to(fundus_png)
    resp = client.post("/import", data={"csrf_token": token, "patient_id": "P-2", "eye": "L", "source": "folder",
                                        "folder": str(usb / "stick" / ".." / "stick")})
    assert resp.status_code == 302
    assert services.analysis.wait_idle(300)
    page = client.get("/").get_data(as_text=True)
    assert page.count("a.png") >= 1 and "link.png" not in page
    assert [s.patient_id for s in services.store.worklist()] == ["P-2"]


def test_a_pin_typed_into_the_name_field_stays_out_of_the_audit_log(app):
    """Every failed login's typed name went into the audit log, which every admin reads: a PIN
    typed into the name field was there in clear. A user's name is still recorded."""
    client = app.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    assert client.post("/login", data={"name": "739184", "pin": PIN, "csrf_token": token}).status_code == 401
    assert client.post("/login", data={"name": "clara", "pin": "000000", "csrf_token": token}).status_code == 401
    login(client, "admin", ADMIN_PIN)
    page = client.get("/admin/audit").get_data(as_text=True)
    assert "739184" not in page
    conn = store_db.connect(app.config["GLANCESEG_DB"])
    failed = [e for e in AuditLog(conn).entries() if e.action == "login_failed"]
    conn.close()
    assert sorted(str(e.detail) for e in failed) == ["{'name': 'clara'}", "{'unknown_name': True}"]


def test_audit_log_hash_chain(app):
    client = app.test_client()
    login(client, "admin", ADMIN_PIN)
    conn = store_db.connect(app.config["GLANCESEG_DB"])
    AuditLog(conn).append("admin", "users_export", "", {"user_names": ["dr_a", "dr_b"], "count": 2})
    conn.close()
    page = client.get("/admin/audit").get_data(as_text=True)
    assert 'id="chain-ok"' in page and "login" in page
    assert "count 2; user names dr_a, dr_b" in page and "{&#34;" not in page  # words, not a JSON object
    conn = store_db.connect(app.config["GLANCESEG_DB"])
    with pytest.raises(Exception, match="append-only"):
        conn.execute("UPDATE ui_audit SET actor='mallory' WHERE seq=1")
    # Tampering that bypasses the triggers is caught by the chain.
    conn.execute("DROP TRIGGER ui_audit_no_update")
    conn.execute("UPDATE ui_audit SET actor='mallory' WHERE seq=1")
    assert AuditLog(conn).verify() == 1
    conn.close()
    assert 'id="chain-broken"' in client.get("/admin/audit").get_data(as_text=True)
