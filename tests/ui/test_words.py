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
