"""The Neon in the reader: the real Pupil Labs client against the fake Neon on loopback, the
scene camera filming the screen with its corner markers under a known homography (synthetic
H.264 scene video, lens distortion included), gaze on a stored lesion's screen position, and
the real glance pipeline emitting that lesion to the reader's live stream.

Nothing in the mapping is stubbed: the UI builds its own ``ScreenMapper`` from the configured
display, the source loads the fake's ``/calibration.bin``, detects the markers in the decoded
frames and maps each gaze sample through the homography and the view the page posted.
"""

from __future__ import annotations

import json
import math
import queue
import re
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gaze"))

from fake_neon import NEON_SCENE_D, FakeNeon  # noqa: E402
from neon_helpers import SceneRenderer, pose, screen_image, tracker_config, wait_for  # noqa: E402

from appliance.gaze.geometry import ViewTransform  # noqa: E402
from appliance.gaze.validation import validation_targets  # noqa: E402
from appliance.gaze.screen_mapping import CameraModel, screen_markers  # noqa: E402
from appliance.ui.gaze_link import view_from_page  # noqa: E402

from .helpers import import_photo, login  # noqa: E402

# A half-resolution Neon-like scene camera keeps encoding and detection cheap on 2 cores.
K = np.array([[445.8, 0.0, 406.15], [0.0, 445.6, 299.35], [0.0, 0.0, 1.0]])
CAMERA = CameraModel(K, NEON_SCENE_D.copy(), (800, 600))
H = pose([[110, 120], [690, 100], [705, 465], [95, 450]])  # screen px -> undistorted scene px
#: The samples of one look: 0.4 s on the target at 200 Hz, then 0.2 s not worn (a gap).
LOOK, GAP = 80, 40


class Wearer:
    """Where the fake Neon's wearer looks, in screen px (changed by the test thread)."""

    def __init__(self) -> None:
        self.target = (960.0, 540.0)

    def gaze(self, index: int) -> tuple[float, float, bool]:
        if index % (LOOK + GAP) >= LOOK:
            return 800.0, 600.0, False  # a blink: the fixation ends
        sx, sy = self.target
        sx += 0.6 * math.sin(index)  # a little tremor, far below a degree
        ideal = cv2.perspectiveTransform(np.array([[[sx, sy]]]), H).reshape(1, 2)
        x, y = CAMERA.distort_points(ideal)[0]
        return float(x), float(y), True


@pytest.fixture(scope="module")
def wearer() -> Wearer:
    return Wearer()


@pytest.fixture(scope="module")
def neon(wearer):
    markers = screen_markers(1920, 1080, 160, 8)  # what the UI draws on the default display
    frame = cv2.cvtColor(SceneRenderer(CAMERA).render(screen_image(markers), H), cv2.COLOR_GRAY2BGR)
    fake = FakeNeon(gaze_fn=wearer.gaze, scene_frames={"visible": frame}, scene_fps=15.0,
                    camera=(K, NEON_SCENE_D), clock_offset_s=1.5, fixation_every=0).start()
    yield fake
    fake.stop()


@pytest.fixture
def ui_config(ui_config, neon):
    """The UI configured for the Neon at the fake's address (1920x1080 display, default markers)."""
    tracker = asdict(tracker_config(neon, scene_stream=True, max_frame_gap_ms=250.0, fixation_events=False))
    return ui_config.replace(gaze={"source": "neon"}, tracker=tracker,
                             display={"width_px": 1920, "height_px": 1080})


def fitted_page_view(width: int, height: int) -> dict:
    """The page's view with the photograph fitted below a 60 px toolbar on a 1920x1080 screen."""
    vw, vh = 1920, 1020
    s = min(vw / width, vh / height)
    return {"scale": s, "tx": (vw - width * s) / 2, "ty": (vh - height * s) / 2,
            "width": vw, "height": vh, "left": 0, "top": 60}


def open_reader(app, services, fundus_png):
    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    shown = [l.to_json() for l in services.store.load_result(study.auto_result_id).result.shown]
    assert shown, "the real scan found no lesion on the demo crop"
    page = client.get(f"/reader/{study.image_id}").get_data(as_text=True)
    post = lambda url, body: client.post(url, json=body, headers={"X-CSRF-Token": token})  # noqa: E731
    return client, post, study.image_id, shown, page


def gaze_events(q: queue.Queue, seconds: float) -> list[tuple[float, float]]:
    """The gaze points (image px) the live stream carried during ``seconds``."""
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ev = q.get(timeout=0.05)
        except queue.Empty:
            continue
        if ev["type"] == "gaze":
            out.append((ev["x"], ev["y"]))
    return out


def test_neon_gaze_on_a_lesion_brings_it_live(app, services, fundus_png, wearer, neon):
    client, post, image, shown, page = open_reader(app, services, fundus_png)
    hub = app.extensions["glanceseg_hub"]
    link = hub.gaze.get(image)
    assert link is not None and link.neon is not None, "opening the study did not start the Neon"
    assert page.count('class="marker"') == 4  # the markers the scene camera must see
    assert "<b>neon</b>" in page
    width, height = link.image_size
    page_view = fitted_page_view(width, height)
    assert post(f"/api/reader/{image}/view", page_view).get_json()["ok"]
    assert np.isclose(link.mapper.view.scale, page_view["scale"])
    target = shown[0]
    wearer.target = (page_view["left"] + page_view["tx"] + page_view["scale"] * target["x"],
                     page_view["top"] + page_view["ty"] + page_view["scale"] * target["y"])
    session = hub.sessions[image]
    q = session.subscribe()
    assert wait_for(lambda: target["id"] in session.shown, 30.0), "no lesion came live from the Neon's gaze"
    lesions = []
    while not q.empty():
        ev = q.get_nowait()
        if ev["type"] == "lesion":
            lesions.append(ev["lesion"])
    assert any(l["id"] == target["id"] for l in lesions), "the lesion was not sent to the reader's stream"
    pts = gaze_events(q, 0.6)
    assert len(pts) > 20
    err = np.hypot(*(np.median(np.array(pts), axis=0) - (target["x"], target["y"])))
    assert err < 3.0, f"gaze landed {err:.2f} image px from the target"
    # The Neon's own status reaches the badge and the Device page.
    status = link.neon.status()
    assert status.connected and status.detail["battery_percent"] == 87
    badge = client.get(f"/api/reader/{image}/tracker").get_json()
    assert badge == {"kind": "neon", "connected": True, "battery_percent": 87, "screen_found": True, "worn": True}
    device = client.get("/device").get_data(as_text=True)
    assert 'id="tracker-kind">neon<' in device and "87 %" in device
    assert 'id="tracker-connected">connected<' in device
    # Closing the reader closes the Neon connection.
    assert post(f"/api/reader/{image}/close", {}).get_json()["closed"] is True
    assert hub.gaze.get(image) is None
    assert not any(t.name == "glanceseg-neon" and t.is_alive() for t in threading.enumerate())


def test_a_zoom_moves_where_the_same_screen_gaze_lands(app, services, fundus_png, wearer, neon):
    _, post, image, shown, _ = open_reader(app, services, fundus_png)
    hub = app.extensions["glanceseg_hub"]
    link = hub.gaze.get(image)
    width, height = link.image_size
    fitted = fitted_page_view(width, height)
    assert post(f"/api/reader/{image}/view", fitted).status_code == 200
    wearer.target = (700.0, 400.0)  # one screen point, looked at throughout
    q = hub.sessions[image].subscribe()
    before = gaze_events(q, 1.5)
    # Pinch: 2.5x about the screen point (1200, 700), as the page computes it.
    s2 = fitted["scale"] * 2.5
    px, py = 1200 - fitted["left"], 700 - fitted["top"]
    zoomed = {**fitted, "scale": s2, "tx": px - (px - fitted["tx"]) * 2.5, "ty": py - (py - fitted["ty"]) * 2.5}
    assert post(f"/api/reader/{image}/view", zoomed).status_code == 200
    gaze_events(q, 0.3)  # samples mapped before the change may still be in flight
    after = gaze_events(q, 1.5)
    assert len(before) > 20 and len(after) > 20
    want_before = view_from_page(width, height, fitted).screen_to_image(700.0, 400.0)
    want_after = view_from_page(width, height, zoomed).screen_to_image(700.0, 400.0)
    got_before, got_after = np.median(np.array(before), axis=0), np.median(np.array(after), axis=0)
    assert np.hypot(*(got_before - want_before)) < 3.0, (got_before, want_before)
    assert np.hypot(*(got_after - want_after)) < 1.5, (got_after, want_after)
    assert np.hypot(*(np.array(want_after) - want_before)) > 50  # the zoom really moved it


def test_view_from_page_maps_as_the_page_draws():
    body = {"scale": 1.7, "tx": -35.5, "ty": 12.25, "width": 1500.4, "height": 900, "left": 20, "top": 64}
    view = view_from_page(768, 600, body)
    for x, y in ((0.0, 0.0), (767.0, 599.0), (300.5, 120.25)):
        page = (20 + -35.5 + 1.7 * x, 64 + 12.25 + 1.7 * y)
        assert np.allclose(view.image_to_screen(x, y), page)
        assert np.allclose(view.screen_to_image(*page), (x, y))
    assert view.on_screen(25.0, 70.0) and not view.on_screen(15.0, 70.0)
    # A pinch about a screen point keeps the image point under it, offset included.
    zoomed = view.with_zoom(view.zoom * 2, anchor_screen=(400.0, 300.0))
    assert np.allclose(zoomed.screen_to_image(400.0, 300.0), view.screen_to_image(400.0, 300.0))
    assert isinstance(view, ViewTransform)
    for bad in ({**body, "scale": 0}, {**body, "tx": math.inf}, {k: v for k, v in body.items() if k != "width"}):
        with pytest.raises(ValueError):
            view_from_page(768, 600, bad)


def page_data(page: str) -> dict:
    """The reader page's JSON settings (its URLs)."""
    return json.loads(re.search(r'id="reader-data">(.*?)</script>', page, re.S).group(1))


def test_one_page_leaving_keeps_the_neon_of_another_reading_the_photograph(app, services, fundus_png, neon):
    """Two tabs on one photograph, or a reload (the old copy unloads after the new one has
    opened): the page that leaves posts its close. That closed the photograph's Neon link
    under the page still reading, which got no gaze and a 'not connected' badge until its
    next zoom; only the last page's close may end the Neon connection."""
    client, post, image, _, page_a = open_reader(app, services, fundus_png)
    page_b = client.get(f"/reader/{image}").get_data(as_text=True)
    hub = app.extensions["glanceseg_hub"]
    link = hub.gaze.get(image)
    close_a, close_b = page_data(page_a)["close_url"], page_data(page_b)["close_url"]
    badge = lambda: client.get(f"/api/reader/{image}/tracker").get_json()["connected"]  # noqa: E731
    assert wait_for(badge, 15.0)
    assert post(close_a, {}).get_json()["closed"] is False
    assert hub.gaze.get(image) is link and not link.closed
    n = link.neon.status().detail["samples"]
    assert wait_for(lambda: link.neon.status().detail["samples"] > n + 20) and badge()
    assert post(close_b, {}).get_json()["closed"] is True
    assert hub.gaze.get(image) is None and not badge()


def test_a_research_recording_holds_one_photographs_reading_and_its_decisions(ui_config, services, fundus_png,
                                                                            neon):
    """``[tracker] recording_enabled``: the Companion records the photograph's reading, with the
    photograph's record number and the clinician's decisions as events, and stops when the
    reader closes it. The setting used to do nothing: the hooks were never called."""
    from appliance.ui.app import create_app

    from .conftest import add_users

    config = ui_config.replace(tracker={"recording_enabled": True})
    app = create_app(config, services)
    app.config["TESTING"] = True
    add_users(config)
    try:
        _, post, image, shown, _ = open_reader(app, services, fundus_png)
        seen = len(neon.events)
        names = lambda: [e["name"] for e in neon.events[seen:]]  # noqa: E731
        assert wait_for(lambda: f"image_shown:{image}" in names(), 20.0), "no recording was started"
        recording = neon.recording_id
        assert recording is not None
        assert post(f"/api/reader/{image}/decision", {"lesion_id": shown[0]["id"], "decision": "rejected"}).status_code == 200
        assert wait_for(lambda: f"lesion_rejected:{shown[0]['id']}" in names(), 10.0)
        assert post(f"/api/reader/{image}/close", {}).get_json()["closed"] is True
        assert names() == [f"image_shown:{image}", f"lesion_rejected:{shown[0]['id']}", f"image_closed:{image}"]
        assert {e["recording_id"] for e in neon.events[seen:]} == {recording}
        assert neon.recording_id is None  # stopped and saved with the reading
    finally:
        app.extensions["glanceseg_hub"].close()


def test_the_gaze_check_measures_the_wearers_offset_and_corrects_it(app, services, fundus_png, wearer, neon):
    """The Neon's error for a wearer is mostly a constant offset, larger than the heat map's 1°
    kernel: five targets measure it, and the reading goes on corrected. Gaze on the targets
    never reaches the photograph's pipeline."""
    _, post, image, shown, _ = open_reader(app, services, fundus_png)
    hub = app.extensions["glanceseg_hub"]
    link = hub.gaze.get(image)
    page_view = fitted_page_view(*link.image_size)
    assert post(f"/api/reader/{image}/view", page_view).get_json()["ok"]
    assert wait_for(lambda: link.neon.status().detail.get("screen_found") is True, 30.0)
    offset = (36.0, -24.0)  # where this wearer's gaze lands beside what they look at, screen px
    q = hub.sessions[image].subscribe()
    answer = post(f"/api/reader/{image}/gaze-check", {}).get_json()
    assert len(answer["targets"]) == 5
    start = time.monotonic()
    for k, (x, y) in enumerate(answer["targets"]):
        wearer.target = (x + offset[0], y + offset[1])
        time.sleep(max(0.0, start + (k + 1) * answer["target_ms"] / 1000 - time.monotonic()))
    during = [ev for ev in iter(lambda: None if q.empty() else q.get_nowait(), None) if ev["type"] == "gaze"]
    result = post(f"/api/reader/{image}/gaze-check/done", {}).get_json()
    assert during == []
    assert result["ok"] is True and result["residual_deg"] < 0.5, result
    assert link.mapper.offset_px == pytest.approx((-offset[0], -offset[1]), abs=3.0)
    # Corrected: the same wearer looking at a lesion now lands on it.
    target = shown[0]
    wearer.target = (page_view["left"] + page_view["tx"] + page_view["scale"] * target["x"] + offset[0],
                     page_view["top"] + page_view["ty"] + page_view["scale"] * target["y"] + offset[1])
    gaze_events(q, 0.3)
    pts = gaze_events(q, 1.0)
    assert len(pts) > 20
    err = np.hypot(*(np.median(np.array(pts), axis=0) - (target["x"], target["y"])))
    assert err < 3.0, f"corrected gaze landed {err:.2f} image px from the target"
    assert post(f"/api/reader/{image}/gaze-check/done", {}).status_code == 400  # none running


def test_the_gaze_check_in_the_browser_follows_the_dots_and_says_the_result(app, services, fundus_png, wearer,
                                                                            neon, tmp_path):
    """The clinician taps "Check gaze": the page shows the five targets at their screen px on
    the server's schedule, the wearer follows them (with a constant error), and the page says
    the check passed; the link's mapper now corrects that error."""
    from .browser import need_browser
    from .test_touch import reader_with_a_lesion, reading, wait_js

    need_browser()
    image_id, _, _ = reader_with_a_lesion(app, services, fundus_png)
    offset = (-30.0, 28.0)
    with reading(app, image_id, tmp_path, (1920, 1080)) as driver:
        link = app.extensions["glanceseg_hub"].gaze.get(image_id)
        assert wait_for(lambda: link.neon.status().detail.get("screen_found") is True, 30.0)
        driver.find_element("id", "gaze-check").click()
        wait_js(driver, "!document.getElementById('gaze-check-overlay').classList.contains('hidden')")
        seen = set()
        while driver.execute_script("return !document.getElementById('gaze-check-overlay').classList.contains('hidden')"):
            r = driver.execute_script("var r = document.getElementById('gaze-target').getBoundingClientRect();"
                                      "return [r.left + r.width / 2, r.top + r.height / 2];")
            seen.add((round(r[0]), round(r[1])))
            wearer.target = (r[0] + offset[0], r[1] + offset[1])  # the wearer looks at the dot
            time.sleep(0.05)
        status = wait_js(driver, "(document.getElementById('reader-status').textContent.indexOf('ready to read') >= 0)"
                                 " && document.getElementById('reader-status').textContent", 20)
        assert "after correcting" in status and link.check is None
        assert {(round(x), round(y)) for x, y in validation_targets(1920, 1080)} <= seen  # at their screen px
        assert link.mapper.offset_px == pytest.approx((-offset[0], -offset[1]), abs=3.0)
