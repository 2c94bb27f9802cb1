"""End to end in real headless Chromium against the real waitress server.

First start -> admin creates a clinician -> the clinician logs in, imports a photograph, opens it,
replays a gaze recording, sees lesions appear, accepts one, rejects one, adds one (and undoes an
add), signs off and opens the report. Every screen is saved under artifacts/screenshots/.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.gaze.base import SourceStatus
from appliance.ui import Services, create_app
from appliance.ui.services import standin_live_factory

from .browser import SCREENSHOTS, chrome, need_browser, served, shot
from .helpers import DOTS, PIN, gaze_csv

pytestmark = pytest.mark.browser

ARTIFACTS = SCREENSHOTS.parent


def wait_for(driver, script: str, timeout_s: float = 20.0):
    """Poll a JavaScript expression until it is truthy; fail with the expression otherwise."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = driver.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def wait_text(driver, text: str, timeout_s: float = 20.0) -> None:
    """Wait until the page shows ``text`` (a click's navigation may still be under way)."""
    wait_for(driver, "document.body && document.body.innerText.indexOf(%s) >= 0" % json.dumps(text), timeout_s)


def tap_image(driver, x: float, y: float) -> None:
    """Click the viewport at image point (x, y)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    vp = driver.find_element(By.ID, "viewport")
    p = driver.execute_script("return window.glanceToScreen(arguments[0], arguments[1])", x, y)
    r = driver.execute_script("var r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height]", vp)
    dx = p["x"] - (r[0] + r[2] / 2)
    dy = p["y"] - (r[1] + r[3] / 2)
    ActionChains(driver).move_to_element_with_offset(vp, int(round(dx)), int(round(dy))).click().perform()


PINCH_JS = """
const vp = document.getElementById('viewport'), r = vp.getBoundingClientRect();
const cx = r.left + r.width / 2, cy = r.top + r.height / 2;
const ev = (type, id, x) => vp.dispatchEvent(new PointerEvent(type, {pointerId: id, clientX: x, clientY: cy,
    bubbles: true, pointerType: 'touch', isPrimary: id === 1}));
ev('pointerdown', 1, cx - 50); ev('pointerdown', 2, cx + 50);
ev('pointermove', 2, cx + 150); ev('pointermove', 1, cx - 150);
ev('pointerup', 2, cx + 150); ev('pointerup', 1, cx - 150);
return window.glanceView.s;
"""


def check_zoom_and_pan(driver) -> None:
    """Pinch (two synthetic touch pointers) zooms about 3x; a mouse drag pans; Fit restores."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    fit = driver.execute_script("return window.glanceView.s")
    zoomed = driver.execute_script(PINCH_JS)
    assert 2.5 * fit < zoomed < 3.5 * fit, (fit, zoomed)
    tx = driver.execute_script("return window.glanceView.tx")
    ActionChains(driver).move_to_element(driver.find_element(By.ID, "viewport")).click_and_hold() \
        .move_by_offset(60, 0).move_by_offset(60, 0).release().perform()
    assert abs(driver.execute_script("return window.glanceView.tx") - (tx + 120)) < 2
    assert driver.find_element(By.ID, "lesion-menu").get_attribute("class") == "hidden"  # a drag is no tap
    shot(driver, "08b_reader_zoomed")
    driver.find_element(By.ID, "fit").click()
    assert abs(driver.execute_script("return window.glanceView.s") - fit) < 1e-6


def look_with_pointer(driver, x: float, y: float) -> None:
    """Pointer gaze: hover over image point (x, y) with small jiggles for ~0.4 s; a lesion appears there."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "toggle-pointer").click()
    assert driver.find_element(By.CSS_SELECTOR, "#gaze-source b").text == "pointer"
    vp = driver.find_element(By.ID, "viewport")
    p = driver.execute_script("return window.glanceToScreen(arguments[0], arguments[1])", x, y)
    r = driver.execute_script("var r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height]", vp)
    chain = ActionChains(driver).move_to_element_with_offset(vp, int(p["x"] - r[0] - r[2] / 2), int(p["y"] - r[1] - r[3] / 2))
    for i in range(12):
        chain = chain.pause(0.035).move_by_offset(1 if i % 2 == 0 else -1, 0)
    chain.perform()
    wait_for(driver, "Array.from(document.querySelectorAll('#overlay circle.lesion')).some(c => "
                     f"Math.hypot(c.getAttribute('cx') - {x}, c.getAttribute('cy') - {y}) < 4)")
    driver.find_element(By.ID, "toggle-pointer").click()


def login_ui(driver, base: str, name: str, pin: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/login")
    driver.find_element(By.ID, "name").clear()
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "pin").send_keys(pin)
    driver.find_element(By.ID, "login").click()


def test_reading_session_end_to_end(ui_config, fundus_png, tmp_path):
    need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    # The UI is under test here, so the live glance is the UI's deterministic stand-in.
    app = create_app(ui_config, Services(config=ui_config, live_factory=standin_live_factory))
    recording = gaze_csv(tmp_path / "gaze.csv")
    driver = chrome(tmp_path)
    try:
        for srv in served(app):
            base = srv.url
            # First start: the admin PIN.
            driver.get(base + "/")
            assert driver.current_url.endswith("/setup")
            shot(driver, "01_first_start")
            driver.find_element(By.ID, "pin").send_keys("97531")
            driver.find_element(By.ID, "pin2").send_keys("97531")
            driver.find_element(By.ID, "create").click()
            wait_text(driver, "Administrator created")
            login_ui(driver, base, "admin", "97531")
            wait_text(driver, "Worklist")
            driver.get(base + "/admin/users")
            form = driver.find_element(By.ID, "new-user")
            form.find_element(By.NAME, "name").send_keys("clara")
            Select(form.find_element(By.NAME, "role")).select_by_value("clinician")
            form.find_element(By.NAME, "pin").send_keys(PIN)
            form.find_element(By.TAG_NAME, "button").click()
            wait_text(driver, "User clara created")
            shot(driver, "02_users")
            driver.find_element(By.ID, "logout").click()

            # A wrong PIN, then the clinician logs in.
            login_ui(driver, base, "clara", "000000")
            wait_text(driver, "Wrong name or PIN")
            shot(driver, "03_login_wrong_pin")
            login_ui(driver, base, "clara", PIN)
            wait_text(driver, "No studies yet")
            shot(driver, "04_worklist_empty")

            # Import: first a refused file, then the photograph.
            driver.get(base + "/import")
            bad = tmp_path / "notes.png"
            bad.write_text("not a photograph")
            driver.find_element(By.ID, "patient_id").send_keys("P-0042")
            driver.find_element(By.ID, "files").send_keys(str(bad))
            driver.find_element(By.ID, "upload").click()
            wait_text(driver, "cannot be used")
            shot(driver, "05_import_refused")
            driver.find_element(By.ID, "patient_id").send_keys("P-0042")
            driver.find_element(By.ID, "files").send_keys(str(fundus_png))
            shot(driver, "06_import_form")
            driver.find_element(By.ID, "upload").click()
            wait_text(driver, "P-0042")
            wait_for(driver, "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            shot(driver, "07_worklist")

            # Open it in the reader, replay the gaze recording, watch lesions appear.
            driver.find_element(By.CSS_SELECTOR, "a.thumb").click()
            wait_for(driver, "document.body.getAttribute('data-reader-ready') === '1'")
            wait_for(driver, "document.getElementById('photo').complete")
            shot(driver, "08_reader_open")
            check_zoom_and_pan(driver)
            look_with_pointer(driver, DOTS[0][0], DOTS[0][1])
            shot(driver, "08c_reader_pointer_gaze")
            driver.find_element(By.ID, "toggle-heat").click()
            driver.find_element(By.ID, "gaze-file").send_keys(str(recording))
            driver.find_element(By.ID, "replay").click()
            wait_for(driver, "document.body.getAttribute('data-replay-done') === '1'", 30)
            n = wait_for(driver, "document.querySelectorAll('#overlay circle.lesion').length >= 3 && "
                                 "document.querySelectorAll('#overlay circle.lesion').length")
            assert "replay" in driver.find_element(By.ID, "gaze-source").text
            shot(driver, "09_reader_lesions_heatmap")
            found = driver.execute_script(
                "return Array.from(document.querySelectorAll('#overlay circle.lesion')).map("
                "c => [+c.getAttribute('data-id'), +c.getAttribute('cx'), +c.getAttribute('cy')])")
            for x, y, _ in DOTS:  # every fixated dot was found
                assert min(np.hypot(fx - x, fy - y) for _, fx, fy in found) < 4, (x, y, found)

            # Accept the first, reject the second.
            first = min(found, key=lambda f: np.hypot(f[1] - DOTS[0][0], f[2] - DOTS[0][1]))
            second = min(found, key=lambda f: np.hypot(f[1] - DOTS[1][0], f[2] - DOTS[1][1]))
            tap_image(driver, first[1], first[2])
            wait_for(driver, "!document.getElementById('lesion-menu').classList.contains('hidden')")
            shot(driver, "10_reader_lesion_menu")
            driver.find_element(By.ID, "accept").click()
            tap_image(driver, second[1], second[2])
            wait_for(driver, "!document.getElementById('lesion-menu').classList.contains('hidden')")
            driver.find_element(By.ID, "reject").click()
            assert "accepted" in driver.find_element(By.ID, f"lesion-{first[0]}").get_attribute("class")
            assert "rejected" in driver.find_element(By.ID, f"lesion-{second[0]}").get_attribute("class")

            # Add one where nothing was marked, undo it, add again.
            tap_image(driver, 480, 330)
            wait_for(driver, "document.querySelectorAll('#overlay circle.added').length === 1")
            driver.find_element(By.ID, "undo").click()
            wait_for(driver, "document.querySelectorAll('#overlay circle.added').length === 0")
            tap_image(driver, 480, 330)
            wait_for(driver, "document.querySelectorAll('#overlay circle.added').length === 1")
            shot(driver, "11_reader_decisions")

            # Results, sign-off, report.
            driver.find_element(By.ID, "to-results").click()
            wait_text(driver, "Sign off")
            result = driver.find_element(By.CSS_SELECTOR, "section.result")
            assert result.find_element(By.CSS_SELECTOR, ".accepted").text == "1"
            assert result.find_element(By.CSS_SELECTOR, ".rejected").text == "1"
            assert result.find_element(By.CSS_SELECTOR, ".added").text == "1"
            assert result.find_element(By.CSS_SELECTOR, ".ma-count").text == "2"
            assert "not a diagnosis" in driver.find_element(By.ID, "statement").text
            wait_for(driver, "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            shot(driver, "12_results")
            Select(driver.find_element(By.ID, "grade")).select_by_value("1")
            driver.find_element(By.ID, "mac-no").click()
            Select(driver.find_element(By.ID, "referral")).select_by_value("routine")
            driver.find_element(By.ID, "sign-off").click()
            wait_text(driver, "queued for sync")
            shot(driver, "13_signed_off")
            driver.find_element(By.ID, "report-link").click()
            wait_text(driver, "Microaneurysms confirmed")
            assert driver.find_element(By.ID, "report-ma-count").text == "2"
            wait_for(driver, "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            assert "Mild non-proliferative DR" in driver.page_source
            shot(driver, "14_report")
            driver.get(base + "/")
            assert "Results pending sync" in driver.find_element(By.ID, "worklist").text
            driver.get(base + "/sync")
            shot(driver, "15_sync")
            driver.get(base + "/device")
            shot(driver, "16_device")
            driver.find_element(By.ID, "logout").click()
            login_ui(driver, base, "admin", "97531")
            wait_text(driver, "Audit log")
            driver.get(base + "/admin/audit")
            text = driver.find_element(By.ID, "audit").text
            for action in ("login", "import", "view", "accept", "reject", "add", "sign_off", "gaze_replay"):
                assert f" {action} " in f" {text} ", action
            assert driver.find_elements(By.ID, "chain-ok")
            shot(driver, "17_audit")
    finally:
        driver.quit()


def test_fixation_to_lesion_drawn_latency(ui_config, tmp_path):
    """Time from a fixation completing on the server to its lesion drawn in Chromium.

    Writes artifacts/ui_latency.json; the markers of a connected tracker are on screen.
    """
    need_browser()
    from selenium.webdriver.common.by import By

    rng = np.random.default_rng(3)
    img = np.zeros((600, 800, 3), np.uint8)
    cv2.circle(img, (400, 300), 290, (40, 110, 200), -1)
    img = np.clip(img + rng.normal(0, 5, img.shape) * (img > 0), 0, 255).astype(np.uint8)
    dots = [(150 + 100 * (i % 6), 120 + 90 * (i // 6)) for i in range(24)]
    dots = [(x, y) for x, y in dots if np.hypot(x - 400, y - 300) < 260]
    for x, y in dots:
        cv2.circle(img, (x, y), 4, (25, 40, 110), -1)
    photo = tmp_path / "grid.png"
    cv2.imwrite(str(photo), img)
    lines = ["timestamp_ns,x,y"]
    t = 0
    for x, y in dots:
        for _ in range(30):  # 300 ms at 100 Hz
            lines.append(f"{t},{x + rng.normal(0, 1.0):.2f},{y + rng.normal(0, 1.0):.2f}")
            t += 10_000_000
        lines.append(f"{t},,")
        t += 10_000_000
    recording = tmp_path / "grid.csv"
    recording.write_text("\n".join(lines) + "\n")

    services = Services(config=ui_config, live_factory=standin_live_factory,
                        tracker_status=lambda: SourceStatus("neon", True, {"battery_percent": 81}))
    app = create_app(ui_config, services)
    from appliance.ui.demo import prepare_demo  # creates users; its sample photographs are imported too

    pin = prepare_demo(ui_config, services)
    driver = chrome(tmp_path)
    try:
        for srv in served(app):
            login_ui(driver, srv.url, "demo", pin)
            wait_text(driver, "DEMO-001")
            driver.get(srv.url + "/import")
            driver.find_element(By.ID, "patient_id").send_keys("LAT-1")
            driver.find_element(By.ID, "files").send_keys(str(photo))
            driver.find_element(By.ID, "upload").click()
            wait_text(driver, "LAT-1")
            driver.find_element(By.CSS_SELECTOR, "a.thumb[href] img[alt='grid.png']").click()
            wait_for(driver, "document.body.getAttribute('data-reader-ready') === '1'")
            assert len(driver.find_elements(By.CSS_SELECTOR, "img.marker")) == 4
            driver.find_element(By.ID, "gaze-file").send_keys(str(recording))
            driver.find_element(By.ID, "replay").click()
            wait_for(driver, "document.body.getAttribute('data-replay-done') === '1'", 60)
            lat = wait_for(driver, f"window.glanceLatencies.length >= {len(dots)} && window.glanceLatencies")
            shot(driver, "18_reader_markers_tracker")
            driver.get(srv.url + "/device")
            shot(driver, "19_device_tracker")
    finally:
        driver.quit()
    lat = sorted(float(v) for v in lat)
    p95 = lat[min(len(lat) - 1, int(np.ceil(0.95 * len(lat))) - 1)]
    out = {"fixations": len(lat), "median_ms": statistics.median(lat), "p95_ms": p95, "max_ms": lat[-1],
           "samples_ms": lat, "pipeline": "ui stand-in glance (appliance/ui/standin_glance.py)"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "ui_latency.json").write_text(json.dumps(out, indent=1))
    print(f"\nfixation -> lesion drawn: n={len(lat)} median {out['median_ms']:.1f} ms, p95 {p95:.1f} ms")
    assert len(lat) >= len(dots)
