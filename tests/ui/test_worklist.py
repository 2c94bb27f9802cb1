"""The worklist page on a station with more studies than a page shows: pages and patient search."""

from __future__ import annotations

import re

from appliance.ui.worklist import PAGE_STUDIES
from store.helpers import make_study_inputs

from .helpers import login


def _add_studies(services, n: int) -> list[int]:
    """Store ``n`` small studies through the store's API (patients P-0000, P-0001, ...); return their ids."""
    ids = []
    for k in range(n):
        photo, result = make_study_inputs(k % 7, h=64, w=64, n=2)
        ids.append(services.store.add_study(photo, f"P-{k:04d}", "LR"[k % 2], result).id)
    return ids


def _rows(page: str) -> list[int]:
    return [int(m) for m in re.findall(r'class="study" data-study-id="(\d+)"', page)]


def test_the_worklist_pages_through_every_study(app, services):
    """Each page shows PAGE_STUDIES rows, newest first, with an Older link until the oldest study;
    every study is reachable (only the 200 newest were shown, and no link led further)."""
    ids = _add_studies(services, 2 * PAGE_STUDIES + 3)
    client = app.test_client()
    login(client)
    seen: list[int] = []
    page, url = 1, "/"
    while url:
        html = client.get(url).get_data(as_text=True)
        rows = _rows(html)
        assert len(rows) == (PAGE_STUDIES if page < 3 else 3), page
        seen += rows
        more = re.search(r'id="older" href="([^"]+)"', html)
        url = more.group(1).replace("&amp;", "&") if more else ""
        page += 1
    assert page == 4 and seen == sorted(ids, reverse=True)
    assert 'id="newer"' in client.get("/?page=2").get_data(as_text=True)
    assert client.get("/?page=x").status_code == 400


def test_the_worklist_finds_a_patients_studies_by_id(app, services):
    """A patient's study from weeks ago (far past the first page) is found by its ID, and only it."""
    ids = _add_studies(services, PAGE_STUDIES + 10)
    client = app.test_client()
    login(client)
    assert ids[0] not in _rows(client.get("/").get_data(as_text=True))
    html = client.get("/?patient=P-0000").get_data(as_text=True)
    assert _rows(html) == [ids[0]] and "P-0000" in html and 'id="older"' not in html
    assert _rows(client.get("/?patient=NOBODY").get_data(as_text=True)) == []
