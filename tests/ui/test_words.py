"""What the pages say, through the real app: times in the station's zone, plain error words."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

import pytest

from .helpers import import_photo, login


@pytest.fixture
def nairobi(monkeypatch):
    """The station's zone is East Africa Time (UTC+3, no daylight saving: a fixed answer)."""
    monkeypatch.setenv("TZ", "Africa/Nairobi")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_sign_off_time_is_local_with_its_zone(app, services, fundus_png, nairobi):
    """Results, report and PDF give the sign-off time in the station's zone, named (EAT), not UTC."""
    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    resp = client.post(f"/study/{study.id}/results", data={"csrf_token": token, "grade": "1", "maculopathy": "no",
                                                            "referral": "routine", "signed_id": ""})
    assert resp.status_code == 302
    signed = [r for r in services.store.results_for_study(study.id) if r.kind == "reviewed"][0]
    utc = datetime.strptime(signed.created_at[:16], "%Y-%m-%dT%H:%M")
    local = (utc + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M") + " EAT"
    for path in (f"/study/{study.id}/results", f"/study/{study.id}/report"):
        page = client.get(path).get_data(as_text=True)
        assert local in page, (path, local)
        assert "UTC" not in page and not re.search(r"\d{2}:\d{2}:\d{2}\.\d+Z", page), path
    pdf = client.get(f"/study/{study.id}/report.pdf").data
    assert local.encode() in pdf and b" UTC" not in pdf


def test_an_unexpected_failure_says_what_to_do(ui_config, engine, fundus_png):
    """A request that fails inside the appliance (here: the database held by another writer past
    the wait) answers in plain words with what to do, as a page and to the reader's scripts;
    never werkzeug's "Internal Server Error ... error in the application"."""
    import sqlite3

    from appliance.store import db as store_db
    from appliance.ui.app import create_app
    from appliance.ui.services import Services

    from .conftest import add_users

    config = ui_config.replace(data={"busy_timeout_s": 0.5})
    services = Services(config=config, engine=engine)
    app = create_app(config, services)
    add_users(config)
    holder = sqlite3.connect(str(store_db.database_path(config.data_dir)), timeout=1.0, isolation_level=None)
    try:
        client = app.test_client()
        _, token = login(client)
        study = import_photo(client, token, fundus_png, services)
        holder.execute("BEGIN EXCLUSIVE")
        page = client.get(f"/study/{study.id}/report")  # writes the audit log
        api = client.get(f"/study/{study.id}/report", headers={"X-CSRF-Token": token})  # as a script asks
        holder.execute("ROLLBACK")
        text = page.get_data(as_text=True)
        assert page.status_code == 500 and api.status_code == 500
        for said in (text, api.get_json()["error"]):
            assert "Try again" in said and "technician" in said, said
            assert "Internal Server Error" not in said and "application" not in said
            assert "OperationalError" not in said and "locked" not in said
    finally:
        holder.close()
        app.extensions["glanceseg_hub"].close()
        services.close()
        services.store.close()


def test_reader_of_a_photograph_removed_by_retention_says_so(app, services, fundus_png):
    """A photograph that retention removed (after its delivery) opens on a page that says where
    it is, not on a black reader around a broken image; even when a reading session of it was
    open before the removal."""
    import sqlite3

    from appliance.store import db as store_db

    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    assert client.get(f"/reader/{study.image_id}").status_code == 200  # a live session holds its pixels
    # What retention's purge leaves in the database (appliance.store.retention).
    conn = sqlite3.connect(str(store_db.database_path(app.config["GLANCESEG"].data_dir)), isolation_level=None)
    conn.execute("UPDATE images SET deleted_at = ? WHERE id = ?", ("2026-11-27T00:00:00Z", study.image_id))
    conn.close()
    page = client.get(f"/reader/{study.image_id}")
    assert page.status_code == 410
    assert "removed by the retention policy" in page.get_data(as_text=True)


def test_the_device_page_does_not_call_the_pointer_a_connected_tracker(app):
    """With no eye tracker the pointer stands in for gaze; "Tracker: connected" sent a technician
    looking for a device that was never there."""
    client = app.test_client()
    login(client)
    page = client.get("/device").get_data(as_text=True)
    assert 'id="tracker-kind">pointer<' in page
    assert re.search(r'id="tracker-connected">none: the pointer stands in for gaze<', page)


def test_the_worklist_says_when_each_study_was_imported(app, services, fundus_png, nairobi):
    """A screening day's list: which patient came when, in the station's time."""
    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    row = [s for s in services.store.worklist() if s.id == study.id][0]
    utc = datetime.strptime(row.created_at[:16], "%Y-%m-%dT%H:%M")
    local = (utc + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M") + " EAT"
    page = client.get("/").get_data(as_text=True)
    assert re.search(r'class="imported">' + re.escape(local) + "<", page), local
