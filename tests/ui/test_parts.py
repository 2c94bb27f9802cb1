"""The UI's parts through the Flask test client, over the real store and the real glance engine
(saliency only): import and analysis, pointer gaze, decisions, undo, sign-off, PDF, demo, sync."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest

from appliance.errors import ConfigError
from appliance.ui.app import create_app
from appliance.ui.services import build_services
from appliance.ui import i18n
from appliance.ui.demo import prepare_demo
from appliance.ui.server import is_loopback, serve
from appliance.ui.sync_panel import plain_error
from appliance.ui.users import hash_pin, verify_pin

from .helpers import PIN, fundus_crop, import_photo, login


def _shown(services, study):
    """The stored automatic result's lesions the reader shows (score >= display threshold)."""
    result = services.store.load_result(study.auto_result_id).result
    return [l.to_json() for l in result.shown]


def test_pointer_gaze_decisions_undo_signoff_and_pdf(app, services, fundus_png):
    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    shown = _shown(services, study)
    assert shown, "the real scan found no lesion on a crop with 15 annotated microaneurysms"
    image = study.image_id
    assert client.get(f"/reader/{image}").status_code == 200
    target = shown[0]
    x, y = target["x"], target["y"]
    post = lambda url, body: client.post(url, json=body, headers={"X-CSRF-Token": token})  # noqa: E731
    # The page's view: image shown at 1.1 screen px per image px, panned, the viewport below a toolbar.
    page_view = {"scale": 1.1, "tx": 40.0, "ty": -20.0, "width": 1000, "height": 800, "left": 12, "top": 64}
    assert post(f"/api/reader/{image}/view", page_view).status_code == 200
    assert post(f"/api/reader/{image}/view", {**page_view, "scale": -1}).status_code == 400
    # The pointer in screen px, where the page draws the target.
    xs, ys = 12 + 40.0 + 1.1 * x, 64 - 20.0 + 1.1 * y
    samples = [{"xs": xs + (i % 2), "ys": ys, "t_ms": 1.7e12 + 10 * i} for i in range(30)]
    samples.append({"gone": True, "t_ms": 1.7e12 + 310})  # the gaze leaves: the fixation ends
    assert post(f"/api/reader/{image}/gaze", {"samples": [{"xs": "a", "t_ms": 1}]}).status_code == 400
    resp = post(f"/api/reader/{image}/gaze", {"samples": samples})
    assert resp.status_code == 200
    link = app.extensions["glanceseg_hub"].gaze.get(image)
    assert np.allclose(link.view.screen_to_image(xs, ys), (x, y))
    session = app.extensions["glanceseg_hub"].sessions[image]
    for _ in range(400):  # the gaze went quiet: the session's ticker ends the fixation
        if target["id"] in session.shown:
            break
        time.sleep(0.025)
    page = client.get(f"/reader/{image}").get_data(as_text=True)
    live_ids = {int(v) for v in re.findall(r'"id": (\d+)', page)}
    # The live pipeline's ids are the stored scan's: the fixated lesion is there under its stored id.
    assert target["id"] in live_ids, (target, live_ids)
    assert live_ids <= {l["id"] for l in shown}
    assert post(f"/api/reader/{image}/decision", {"lesion_id": target["id"], "decision": "accepted"}).status_code == 200
    assert post(f"/api/reader/{image}/decision", {"lesion_id": target["id"], "decision": "bogus"}).status_code == 400
    assert post(f"/api/reader/{image}/decision", {"lesion_id": 987654321, "decision": "rejected"}).status_code == 400
    states, _ = services.store.lesion_states(study.auto_result_id)
    assert states == {target["id"]: "accept"}
    # Tap where nothing is marked: no model loaded, so the clinician's disc is stored.
    far = max(((fx, fy) for fx in (40, 380, 720) for fy in (40, 380, 720)),
              key=lambda p: min(np.hypot(p[0] - l["x"], p[1] - l["y"]) for l in shown))
    added = post(f"/api/reader/{image}/prompt", {"x": far[0], "y": far[1]}).get_json()
    assert added["ok"] and added["lesion"]["source"] == "clinician" and added["lesion"]["decision"] == "added"
    assert post(f"/api/reader/{image}/prompt", {"x": 5000, "y": 5}).status_code == 400
    _, stored_added = services.store.lesion_states(study.auto_result_id)
    assert [a.id for a in stored_added] == [added["lesion"]["id"]]
    undone = post(f"/api/reader/{image}/undo", {}).get_json()
    assert undone == {"ok": True, "lesion_id": added["lesion"]["id"], "present": False, "decision": None}
    assert services.store.lesion_states(study.auto_result_id)[1] == []
    added = post(f"/api/reader/{image}/prompt", {"x": far[0], "y": far[1]}).get_json()
    results = client.get(f"/study/{study.id}/results").get_data(as_text=True)
    assert re.search(r'class="ma-count">2<', results)
    bad = client.post(f"/study/{study.id}/results", data={"csrf_token": token, "referral": "none"})
    assert bad.status_code == 400 and b"Choose a grade" in bad.data
    ok = client.post(f"/study/{study.id}/results", data={"csrf_token": token, "grade": "1", "maculopathy": "no",
                                                          "referral": "routine"})
    assert ok.status_code == 302
    reviewed = [r for r in services.store.results_for_study(study.id) if r.kind == "reviewed"]
    # The reviewed result is the clinician's: the accepted lesion and the added one, nothing left alone.
    assert len(reviewed) == 1 and reviewed[0].lesion_count == 2 and reviewed[0].signed_by == "clara"
    assert reviewed[0].grade.startswith("1 - Mild non-proliferative DR")
    assert {i.kind for i in services.store.outbox(study_id=study.id) if i.result_id == reviewed[0].id} == {"seg", "sr"}
    assert "Results pending sync" in client.get("/").get_data(as_text=True)
    pdf = client.get(f"/study/{study.id}/report.pdf").data
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    xref = int(pdf[pdf.rindex(b"startxref") + 9:].split()[0])
    assert pdf[xref:xref + 4] == b"xref"
    offsets = [int(line.split()[0]) for line in pdf[xref:].split(b"\n")[3:] if line.endswith(b" n ")]
    for n, off in enumerate(offsets, start=1):
        assert pdf[off:].startswith(f"{n} 0 obj".encode())
    assert b"Mild non-proliferative DR" in pdf and b"/DCTDecode" in pdf
    # The same form sent again (a double tap, or a colleague's page from before this sign-off) is
    # refused: it would queue a second report, or replace the grade unseen.
    stale = client.post(f"/study/{study.id}/results", data={"csrf_token": token, "grade": "4", "maculopathy": "yes",
                                                             "referral": "urgent", "signed_id": ""})
    assert stale.status_code == 409 and b"signed this study off meanwhile" in stale.data
    assert len([r for r in services.store.results_for_study(study.id) if r.kind == "reviewed"]) == 1
    # A decision after the sign-off is not shown under its signature: the pages say it awaits a new one.
    assert b"changed-since" not in client.get(f"/study/{study.id}/results").data
    other = next(l for l in shown if l["id"] != target["id"])
    assert post(f"/api/reader/{image}/decision", {"lesion_id": other["id"], "decision": "rejected"}).status_code == 200
    assert b"changed-since" in client.get(f"/study/{study.id}/results").data
    assert b"Draft: decisions changed" in client.get(f"/study/{study.id}/report").data
    assert b"Draft: decisions changed" in client.get(f"/study/{study.id}/report.pdf").data
    amend = client.post(f"/study/{study.id}/results", data={"csrf_token": token, "grade": "1", "maculopathy": "no",
                                                             "referral": "routine", "signed_id": str(reviewed[0].id)})
    assert amend.status_code == 302
    assert b"changed-since" not in client.get(f"/study/{study.id}/results").data
    # A script that does not send the field (DESIGN's amendments) is not second-guessed.
    scripted = client.post(f"/study/{study.id}/results", data={"csrf_token": token, "grade": "1", "maculopathy": "no",
                                                                "referral": "routine"})
    assert scripted.status_code == 302


def test_ungradable_badge_names_what_to_fix(app, services, fundus_png):
    # The crop holds no edge of the aperture, so its scale is a guess: the pages say so, not just "retake".
    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    badge = "Ungradable: retake (scale unknown: no edge of the field of view)"
    assert badge in client.get("/").get_data(as_text=True)
    assert badge in client.get(f"/reader/{study.image_id}").get_data(as_text=True)
    report = services.store.load_result(study.auto_result_id).result
    assert set(report.quality_reasons) == {"fov_edge"} and report.um_per_px > 10


def test_a_photograph_removed_by_retention_is_neither_served_nor_a_crash(app, services, fundus_png, ui_config):
    from appliance.store import db as store_db

    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    image = services.store.get_image(study.image_id)
    resp = client.get(f"/image/{study.image_id}/display.jpg")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    cached = ui_config.data_dir / "display" / f"{image.sha256}.jpg"
    assert cached.exists()
    # What retention does once delivery is confirmed: mark the row, remove the photograph.
    conn = store_db.open_database(ui_config.data_dir)
    with conn:
        conn.execute("UPDATE images SET deleted_at = ? WHERE id = ?", ("2026-01-01T00:00:00Z", study.image_id))
    conn.close()
    services.store.path(image.path).unlink()
    gone = client.get(f"/image/{study.image_id}/display.jpg")
    assert gone.status_code == 410 and not cached.exists()
    page = client.get(f"/image/{study.image_id}/overlay.jpg")
    assert page.status_code == 409 and b"retention" in page.data  # the store's sentence, not a server error


def test_reader_event_streams_leave_threads_for_the_other_pages(ui_config, services, fundus_png):
    # Each open reader page's event stream holds a server thread; they must never take them all.
    from .conftest import add_users
    from .helpers import ADMIN_PIN

    config = ui_config.replace(ui={"threads": 6})  # 2 for streams, 4 kept for pages and /healthz
    app = create_app(config, services)
    app.config["TESTING"] = True
    add_users(config)
    slots = app.extensions["glanceseg_streams"]
    try:
        client = app.test_client()
        _, token = login(client)
        study = import_photo(client, token, fundus_png, services)
        url = f"/reader/{study.image_id}/events"
        first = client.get(url, buffered=False)
        assert first.status_code == 200 and next(first.response).startswith(b"retry:")
        session = app.extensions["glanceseg_hub"].sessions[study.image_id]
        assert slots.acquire("another reader")  # the second and last slot
        # All taken: clara's newer page (she flipped to the next photograph) ends her older stream.
        second = client.get(url, buffered=False)
        assert second.status_code == 200 and len(session.subscribers) == 1
        # Someone with no stream of their own to give up is refused, with a reason.
        other = app.test_client()
        login(other, "admin", ADMIN_PIN)
        refused = other.get(url)
        assert refused.status_code == 429 and b"Too many reader pages" in refused.data
        second.close()  # the page went away: its slot comes back
        assert slots.acquire("a third reader")
    finally:
        app.extensions["glanceseg_hub"].close()


def test_stream_slots_bound_each_user_and_the_total():
    from appliance.ui.live import StreamSlots

    ended: list[str] = []
    stop = lambda name: (lambda: ended.append(name))  # noqa: E731
    slots = StreamSlots(total=4, per_user=2)
    a, b, c = stop("a"), stop("b"), stop("c")
    assert slots.acquire("clara", a) and slots.acquire("clara", b) and ended == []
    assert slots.acquire("clara", c) and ended == ["a"]  # her third page ends her first stream
    assert slots.acquire("carl", stop("d")) and slots.acquire("carl", stop("e"))  # all 4 taken
    assert not slots.acquire("tom", stop("t")) and ended == ["a"]  # nothing of his to give up
    slots.release("clara", a)  # the ended stream closing later changes nothing
    slots.release("clara", c)
    assert slots.acquire("tom", stop("t"))


def test_the_same_photograph_is_not_imported_twice_for_one_eye(app, services, fundus_png):
    client = app.test_client()
    _, token = login(client)
    import_photo(client, token, fundus_png, services, patient="P-5", eye="L")
    send = lambda patient: client.post("/import", content_type="multipart/form-data", data={  # noqa: E731
        "csrf_token": token, "patient_id": patient, "eye": "L", "source": "upload",
        "files": (io.BytesIO(fundus_png.read_bytes()), fundus_png.name)}, follow_redirects=True)
    again = send("P-5")  # a double submit: refused, naming the study it would repeat
    assert again.status_code == 400 and "already imported: patient P-5, left eye" in again.get_data(as_text=True)
    assert services.analysis.wait_idle(60) and len(services.store.worklist()) == 1
    other = send("P-6")  # another patient: imported (a shared file), with a word to check the ID
    assert other.status_code == 200 and "imported before for patient P-5, left eye" in other.get_data(as_text=True)
    assert services.analysis.wait_idle(60) and len(services.store.worklist()) == 2


def test_the_import_page_asks_for_a_pseudonym_not_a_name(app, services, fundus_png):
    client = app.test_client()
    _, token = login(client)
    for patient in ("Doe^John", "Jane Doe"):
        resp = client.post("/import", content_type="multipart/form-data", data={
            "csrf_token": token, "patient_id": patient, "eye": "L", "source": "upload",
            "files": (io.BytesIO(fundus_png.read_bytes()), fundus_png.name)})
        assert resp.status_code == 400 and "pseudonymous code" in resp.get_data(as_text=True)
    assert services.store.worklist() == []


def test_sight_threatening_grade_without_referral_asks_for_confirmation(app, services, fundus_png):
    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    url = f"/study/{study.id}/results"
    form = {"csrf_token": token, "grade": "4", "maculopathy": "no", "referral": "none"}
    asked = client.post(url, data=form)
    assert asked.status_code == 400 and b"Grade 4 with no referral" in asked.data and b'id="confirm"' in asked.data
    assert not [r for r in services.store.results_for_study(study.id) if r.kind == "reviewed"]
    assert client.post(url, data={**form, "maculopathy": "yes", "grade": "1"}).status_code == 400
    assert client.post(url, data={**form, "confirm": "1"}).status_code == 302  # the clinician's decision stands
    assert client.post(url, data={**form, "grade": "2", "referral": "none"}).status_code == 302  # nothing to ask


def test_unknown_live_lesion_is_recorded_as_added(app, services, fundus_png):
    """A live lesion whose id the stored result lacks (it should not happen) is stored as added."""
    from appliance.glance.lesions import Lesion

    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    hub = app.extensions["glanceseg_hub"]
    mask = np.ones((5, 5), bool)
    new_id = hub.resolve(study.image_id, Lesion(999_999_999, 100.0, 100.0, 25, (98, 98, 103, 103), 0.9, "saliency", mask))
    _, added = services.store.lesion_states(study.auto_result_id)
    assert [a.id for a in added] == [new_id] and added[0].area_px == 25


def test_overlay_display_and_marker_images(app, services, fundus_png):
    from appliance.gaze.screen_mapping import screen_markers

    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    assert client.get(f"/image/{study.image_id}/display.jpg").data[:3] == b"\xff\xd8\xff"
    assert client.get(f"/image/{study.image_id}/overlay.jpg").data[:3] == b"\xff\xd8\xff"
    png = client.get("/reader/marker/0.png").data
    assert png[:4] == b"\x89PNG"
    d, t = app.config["GLANCESEG"].display, app.config["GLANCESEG"].tracker
    assert png == screen_markers(d.width_px, d.height_px, t.marker_size_px, t.marker_margin_px)[0].png()
    assert client.get("/reader/marker/9.png").status_code == 404


def test_replay_rejects_bad_csv(app, services, fundus_png):
    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    resp = client.post(f"/api/reader/{study.image_id}/replay", data={"gaze": (io.BytesIO(b"a,b\n1,2\n"), "g.csv")},
                       headers={"X-CSRF-Token": token}, content_type="multipart/form-data")
    assert resp.status_code == 400 and "cannot be read" in resp.get_json()["error"]
    good = b"timestamp_ns,x,y\n0,10,10\n5000000,11,11\n"
    for speed in ("fast", "nan"):  # a bad form value is a 400 with a reason, not a server error
        resp = client.post(f"/api/reader/{study.image_id}/replay", content_type="multipart/form-data",
                           data={"gaze": (io.BytesIO(good), "g.csv"), "speed": speed}, headers={"X-CSRF-Token": token})
        assert resp.status_code == 400 and "speed" in resp.get_json()["error"]


def test_demo_imports_samples_through_the_worker(ui_config, engine, monkeypatch, tmp_path):
    from appliance.ui import demo
    from appliance.ui.services import Services

    monkeypatch.setattr(demo, "sample_photographs", lambda: [fundus_crop(tmp_path / "IDRiD_03_crop.png", 384)])
    services = Services(config=ui_config, engine=engine)
    try:
        pin = prepare_demo(ui_config, services)
        assert re.fullmatch(r"\d{6}", pin)
        app = create_app(ui_config, services)
        client = app.test_client()
        login(client, "demo", pin)
        assert services.analysis.wait_idle(300)
        page = client.get("/").get_data(as_text=True)
        assert "DEMO-001" in page and "IDRiD_03_crop.png" in page
        assert [s.patient_id for s in services.store.worklist()] == ["DEMO-001"]
        app.extensions["glanceseg_hub"].close()
    finally:
        services.close()
        services.store.close()


def test_lan_requires_tls(ui_config):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("192.168.1.5")
    # The DICOMweb client's rule: the UI's own copy refused these two as LAN hosts.
    assert is_loopback("LOCALHOST") and is_loopback("localhost.localdomain")
    with pytest.raises(ConfigError, match="only over TLS"):
        serve(ui_config.replace(ui={"host": "0.0.0.0"}))


def test_sync_page_over_real_store(ui_config):
    from appliance.store.store import Store

    store = Store(ui_config)
    try:
        app = create_app(ui_config, build_services(ui_config, store=store))
        from appliance.store import db as store_db
        from appliance.ui.users import UserStore

        conn = store_db.open_database(ui_config.data_dir)
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


def test_the_report_names_the_model_that_made_the_result(app, services):
    # A model update installed since (or not yet loaded by the engine) must not be printed beside
    # lesions another model found.
    import types

    from appliance.ui.results import result_model

    installed = {"name": "litemedsam", "version": "2", "variant": "int8", "sha256": "ab" * 32}
    services.model_info = lambda: dict(installed)
    study = types.SimpleNamespace(result_id=1)
    made_by = lambda sha: types.SimpleNamespace(  # noqa: E731
        auto_result=lambda _id: types.SimpleNamespace(model_name="litemedsam", model_sha256=sha))
    with app.test_request_context():
        assert result_model(made_by("ab" * 32), study) == installed
        older = result_model(made_by("cd" * 32), study)
    assert older["sha256"] == "cd" * 32 and older["version"] != "2"


def test_leaving_a_photograph_stops_its_live_pipeline_and_keeps_what_it_showed(app, services, fundus_png):
    """The last reader page of a photograph leaves (the reader moves to the next one): its live
    session used to stay until the server stopped, so with the model its pre-encoder went on
    encoding the old photograph on the cores and into the embedding cache the next one needs,
    and every photograph of the day kept its threads. It must stop; the lesions its gaze
    brought up are drawn again when the reader comes back."""
    import json
    import threading

    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    target = _shown(services, study)[0]
    image = study.image_id
    page = client.get(f"/reader/{image}").get_data(as_text=True)
    close_url = json.loads(re.search(r'id="reader-data">(.*?)</script>', page, re.S).group(1))["close_url"]
    post = lambda url, body: client.post(url, json=body, headers={"X-CSRF-Token": token})  # noqa: E731
    view = {"scale": 1.0, "tx": 0.0, "ty": 0.0, "width": 1000, "height": 800, "left": 0, "top": 0}
    assert post(f"/api/reader/{image}/view", view).status_code == 200
    samples = [{"xs": target["x"] + (i % 2), "ys": target["y"], "t_ms": 1.7e12 + 10 * i} for i in range(30)]
    assert post(f"/api/reader/{image}/gaze", {"samples": samples + [{"gone": True, "t_ms": 1.7e12 + 310}]}).status_code == 200
    hub = app.extensions["glanceseg_hub"]
    session = hub.sessions[image]
    deadline = time.monotonic() + 10.0
    while target["id"] not in session.shown and time.monotonic() < deadline:
        time.sleep(0.025)
    assert target["id"] in session.shown
    ticker = next(t for t in threading.enumerate() if t.name == f"gaze-tick-{image}")
    assert post(close_url, {}).get_json()["closed"] is True
    assert image not in hub.sessions
    assert not ticker.is_alive()
    again = client.get(f"/reader/{image}").get_data(as_text=True)
    lesions = json.loads(re.search(r'id="reader-data">(.*?)</script>', again, re.S).group(1))["lesions"]
    assert target["id"] in {l["id"] for l in lesions}
    assert hub.sessions[image] is not session


def test_pointer_gaze_is_set_aside_while_a_recording_replays(app, services, fundus_png):
    """A replayed recording owns the pipeline while it runs: the Neon's gaze was set aside, but
    pointer gaze (a mouse resting on the photograph repeats its position every 40 ms) went in
    too, its epoch-ns clock alternating with the recording's, so every replayed fixation ended
    as a clock jump and the replay found nothing."""
    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    image = study.image_id
    post = lambda url, body: client.post(url, json=body, headers={"X-CSRF-Token": token})  # noqa: E731
    # Two 300 ms dwells, 30 Hz, over 1.1 s of recording replayed in real time.
    rows = ["timestamp_ns,x,y,worn,px_per_deg"]
    for k, (x, y) in enumerate([(150, 160), (300, 280)]):
        rows += [f"{(k * 600 + i * 33) * 1_000_000},{x + i % 2},{y},1,60" for i in range(10)]
    recording = ("\n".join(rows) + "\n").encode()
    resp = client.post(f"/api/reader/{image}/replay", data={"gaze": (io.BytesIO(recording), "g.csv"), "speed": "1"},
                       headers={"X-CSRF-Token": token}, content_type="multipart/form-data")
    assert resp.status_code == 200
    session = app.extensions["glanceseg_hub"].sessions[image]
    t_ms = time.time() * 1000
    while session.replay_thread is not None and session.replay_thread.is_alive():
        # The mouse rests on the photograph with pointer gaze on: the page repeats its position.
        assert post(f"/api/reader/{image}/gaze", {"samples": [{"xs": 400, "ys": 300, "t_ms": t_ms}]}).status_code == 200
        t_ms += 40
        time.sleep(0.04)
    counters = session.glance.pipeline.gaze_map.counters
    assert counters["fixations"] == 2
    # At most one jump: a position the feeder takes just after the replay ended goes in.
    assert counters["clock_jump"] <= 1
