"""Touch-only use in real headless Chromium against the real waitress server.

The station has a touchscreen and no keyboard or mouse, and its kiosk (cage + Chromium) has no
system on-screen keyboard: these tests do what a clinician or technician can do with a finger.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import pytest

from .browser import chrome, need_browser, served
from .helpers import PIN

pytestmark = pytest.mark.browser


def wait_js(driver: Any, script: str, timeout_s: float = 20.0) -> Any:
    """Poll a JavaScript expression until it is truthy; fail naming it otherwise."""
    from selenium.common.exceptions import WebDriverException

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            value = driver.execute_script("return " + script)
        except WebDriverException:  # navigating
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def screen(driver: Any, size: tuple[int, int]) -> None:
    """Make the page's viewport exactly ``size`` (w, h) CSS px, as on the kiosk's full screen
    (a headless window of that size keeps part of its height for itself)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False})


def osk_type(driver: Any, text: str) -> None:
    """Type ``text`` by tapping the on-screen keyboard's keys (shift for capitals)."""
    from selenium.webdriver.common.by import By

    for ch in text:
        if ch.isalpha() and ch.isupper():
            driver.find_element(By.CSS_SELECTOR, "#osk button[data-key=shift]").click()
        driver.find_element(By.CSS_SELECTOR, f"#osk button[data-key={json.dumps('char:' + ch.lower())}]").click()


@pytest.mark.parametrize("size", [(1024, 600), (1280, 800)])
def test_login_with_the_on_screen_keyboard(app, tmp_path, size):
    """Name and PIN typed on the on-screen keyboard log the clinician in; nothing else is typed."""
    need_browser()
    from selenium.webdriver.common.by import By

    driver = chrome(tmp_path, size)
    screen(driver, size)
    try:
        for srv in served(app):
            driver.get(srv.url + "/login")
            assert not driver.find_elements(By.ID, "osk")  # no keyboard before a field is tapped
            driver.find_element(By.ID, "name").click()
            keyboard = driver.find_element(By.ID, "osk")
            assert keyboard.is_displayed()
            keys = driver.find_elements(By.CSS_SELECTOR, "#osk button")
            assert min(k.size["height"] for k in keys) >= 44 and min(k.size["width"] for k in keys) >= 44
            osk_type(driver, "clarx")
            driver.find_element(By.CSS_SELECTOR, "#osk button[data-key=back]").click()
            osk_type(driver, "a")
            assert driver.find_element(By.ID, "name").get_attribute("value") == "clara"
            driver.find_element(By.CSS_SELECTOR, "#osk button[data-key=enter]").click()  # OK: on to the PIN
            assert driver.switch_to.active_element.get_attribute("id") == "pin"
            assert "osk-numeric" in driver.find_element(By.ID, "osk").get_attribute("class")  # a PIN pad
            osk_type(driver, PIN)
            driver.find_element(By.CSS_SELECTOR, "#osk button[data-key=enter]").click()  # OK: log in
            wait_js(driver, "document.getElementById('nav-worklist')")
            assert "clara" in driver.find_element(By.CSS_SELECTOR, ".who").text
    finally:
        driver.quit()


def test_patient_id_with_the_on_screen_keyboard(app, tmp_path):
    """The import form's patient ID (capitals, digits, a dash) can be typed by touch."""
    need_browser()
    from selenium.webdriver.common.by import By

    driver = chrome(tmp_path, (1024, 600))
    screen(driver, (1024, 600))
    try:
        for srv in served(app):
            driver.get(srv.url + "/login")
            driver.find_element(By.ID, "name").click()
            osk_type(driver, "clara")
            driver.find_element(By.ID, "pin").click()
            osk_type(driver, PIN)
            driver.find_element(By.CSS_SELECTOR, "#osk button[data-key=enter]").click()
            wait_js(driver, "document.getElementById('nav-import')")
            driver.get(srv.url + "/import")
            field = driver.find_element(By.ID, "patient_id")
            field.click()
            osk_type(driver, "P-07")
            assert field.get_attribute("value") == "P-07"
            # The field stays in view above the keyboard.
            top = driver.execute_script("return document.getElementById('osk').getBoundingClientRect().top")
            assert field.rect["y"] + field.rect["height"] - driver.execute_script("return window.scrollY") <= top
            driver.find_element(By.CSS_SELECTOR, "#osk button[data-key=hide]").click()
            assert not driver.find_element(By.ID, "osk").is_displayed()
    finally:
        driver.quit()


def reader_with_a_lesion(app: Any, services: Any, fundus_png: Any) -> tuple[int, int, dict]:
    """Import the photograph, accept its best lesion through the API (so the reader draws it on
    opening); return (image id, result id, that lesion)."""
    from .helpers import import_photo, login

    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    shown = [l.to_json() for l in services.store.load_result(study.auto_result_id).result.shown]
    assert shown, "the scan found no lesion to decide on"
    lesion = max(shown, key=lambda l: l["score"])
    image_id = study.image_id
    resp = client.post(f"/api/reader/{image_id}/decision", json={"lesion_id": lesion["id"], "decision": "accepted"},
                       headers={"X-CSRF-Token": token})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return image_id, study.auto_result_id, lesion


@contextmanager
def touchscreen(app: Any, tmp_path: Path, size: tuple[int, int], name: str = "clara",
                pin: str = PIN) -> Iterator[tuple[Any, str]]:
    """A touchscreen of ``size`` on the served app with ``name`` logged in; yields (driver, base URL)."""
    driver = chrome(tmp_path, size)
    screen(driver, size)
    try:
        for srv in served(app):
            log_in(driver, srv.url, name, pin)
            yield driver, srv.url
    finally:
        driver.quit()


@contextmanager
def reading(app: Any, image_id: int, tmp_path: Path, size: tuple[int, int]) -> Iterator[Any]:
    """:func:`touchscreen` with the clinician's reader open on ``image_id``; yields the driver."""
    with touchscreen(app, tmp_path, size) as (driver, base):
        show_reader(driver, base, image_id)
        yield driver


def reader_app(ui_config: Any, engine: Any, fundus_png: Any, **changes: dict) -> tuple[Any, Any, int, int, dict]:
    """The app on ``ui_config.replace(**changes)`` with the users and a photograph whose best
    lesion is accepted; return (app, services, image id, result id, that lesion)."""
    from appliance.ui.app import create_app
    from appliance.ui.services import Services

    from .conftest import add_users

    config = ui_config.replace(**changes)
    services = Services(config=config, engine=engine)
    app = create_app(config, services)
    add_users(config)
    return (app, services, *reader_with_a_lesion(app, services, fundus_png))


def log_in(driver: Any, base: str, name: str = "clara", pin: str = PIN) -> None:
    """Log ``name`` in through the login form."""
    from selenium.webdriver.common.by import By

    driver.get(base + "/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "pin").send_keys(pin)
    driver.find_element(By.ID, "login").click()
    wait_js(driver, "document.getElementById('nav-worklist')")


def show_reader(driver: Any, base: str, image_id: int) -> None:
    """Open the reader on ``image_id`` and wait until its photograph is drawn."""
    driver.get(f"{base}/reader/{image_id}")
    wait_js(driver, "document.body.getAttribute('data-reader-ready') === '1' && document.getElementById('photo').complete")


def zoom_at(driver: Any, x: float, y: float, factor: float) -> None:
    """Zoom the reader about image point (x, y) by about ``factor`` (wheel steps of 1.2)."""
    driver.execute_script("""
        var p = window.glanceToScreen(arguments[0], arguments[1]), vp = document.getElementById('viewport');
        for (var i = 0; i < arguments[2]; i++) {
          vp.dispatchEvent(new WheelEvent('wheel', {clientX: p.x, clientY: p.y, deltaY: -100, bubbles: true, cancelable: true}));
        }""", x, y, int(round(np.log(factor) / np.log(1.2))))


def menu_open(driver: Any) -> bool:
    return not driver.execute_script("return document.getElementById('lesion-menu').classList.contains('hidden')")


@pytest.mark.parametrize("size", [(1024, 600), (1280, 800)])
def test_reader_fills_the_screen_without_scrolling(app, services, fundus_png, tmp_path, size):
    """At both screen sizes the reading page does not scroll, every control is on screen and
    the photograph's area is the screen less the top bar, the control column and the status line."""
    need_browser()
    image_id, _, _ = reader_with_a_lesion(app, services, fundus_png)
    with reading(app, image_id, tmp_path, size) as driver:
        m = driver.execute_script("""
            var d = document.documentElement, vp = document.getElementById('viewport').getBoundingClientRect();
            var bar = document.querySelector('.topbar').getBoundingClientRect();
            var out = Array.from(document.querySelectorAll('.reader-bar button, .reader-bar a, .reader-bar input'))
              .filter(e => { var r = e.getBoundingClientRect();
                             return r.bottom > window.innerHeight + 0.5 || r.right > window.innerWidth + 0.5 || r.left < 0; })
              .map(e => e.id);
            return {sh: d.scrollHeight, sw: d.scrollWidth, h: window.innerHeight, w: window.innerWidth,
                    vpH: vp.height, vpW: vp.width, bar: bar.height, out: out,
                    photoH: document.getElementById('photo').getBoundingClientRect().height};""")
        assert m["sh"] <= m["h"] and m["sw"] <= m["w"], m  # no page scroll either way
        assert m["out"] == [], (m, driver.execute_script("return Array.from(document.querySelector('.reader-bar').children).map(e => [e.id || e.className, Math.round(e.getBoundingClientRect().top), Math.round(e.getBoundingClientRect().height)])"))
        assert m["vpH"] >= m["h"] - m["bar"] - 60, m  # only the status line below the photograph
        assert m["vpW"] >= m["w"] - 250, m
        assert m["photoH"] >= m["vpH"] - 1, m  # a square photograph fitted to the height



def test_double_tap_on_a_menu_button_records_one_decision(app, services, fundus_png, tmp_path):
    """A double tap on Reject records one rejection; its second tap, landing on the photograph
    where the menu was, neither adds a lesion nor opens a menu."""
    need_browser()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from .test_e2e import tap_image

    image_id, result_id, lesion = reader_with_a_lesion(app, services, fundus_png)
    with reading(app, image_id, tmp_path, (1280, 800)) as driver:
        zoom_at(driver, lesion["x"], lesion["y"], 3)  # read zoomed in: the menu lies over the photograph
        tap_image(driver, lesion["x"], lesion["y"])
        assert menu_open(driver)
        info = driver.find_element(By.ID, "lesion-info").text  # words, not the store's lesion id
        assert info == f"Microaneurysm? (model score {lesion['score']:.2f})", info
        ActionChains(driver).double_click(driver.find_element(By.ID, "reject")).perform()
        wait_js(driver, f"document.getElementById('lesion-{lesion['id']}').classList.contains('rejected')")
        time.sleep(1.0)  # any request the second tap started has arrived by now
        states, added = services.store.lesion_states(result_id)
        assert states == {lesion["id"]: "reject"} and added == []
        assert [d.action for d in services.store.decisions(result_id)] == ["accept", "reject"]
        assert not menu_open(driver)


def test_a_stray_tap_only_offers_to_add(app, services, fundus_png, tmp_path):
    """A tap on an unmarked spot asks "Add a microaneurysm here?"; only Add records a lesion, and
    a tap a fingertip's width off a lesion still opens that lesion's menu."""
    need_browser()
    from selenium.webdriver.common.by import By

    from .test_e2e import tap_image

    image_id, result_id, lesion = reader_with_a_lesion(app, services, fundus_png)
    with reading(app, image_id, tmp_path, (1024, 600)) as driver:
        s = driver.execute_script("return window.glanceView.s")
        r = driver.execute_script("return document.getElementById('lesion-%d').getAttribute('r')" % lesion["id"])
        off = float(r) + 18 / s  # 18 screen px beyond the drawn circle
        tap_image(driver, lesion["x"] + off, lesion["y"])
        assert menu_open(driver) and driver.find_element(By.ID, "accept").is_displayed()
        driver.find_element(By.ID, "menu-close").click()
        far = (60.0, 60.0) if np.hypot(lesion["x"] - 60, lesion["y"] - 60) > 200 else (700.0, 700.0)
        tap_image(driver, *far)
        assert menu_open(driver)
        assert driver.find_element(By.ID, "add").is_displayed() and not driver.find_element(By.ID, "accept").is_displayed()
        time.sleep(0.5)
        assert services.store.lesion_states(result_id)[1] == []  # nothing added by the tap itself
        driver.find_element(By.ID, "add").click()
        wait_js(driver, "document.querySelectorAll('#overlay circle.added').length === 1")
        assert len(services.store.lesion_states(result_id)[1]) == 1



def test_a_decision_the_store_refused_is_taken_back(ui_config, engine, fundus_png, tmp_path):
    """When the appliance cannot record a decision (the database is held by another writer past
    its wait), the lesion goes back to what the store holds and the status line says so."""
    need_browser()
    import sqlite3

    from selenium.webdriver.common.by import By

    from appliance.store import db as store_db

    from .test_e2e import tap_image

    app, services, image_id, result_id, lesion = reader_app(ui_config, engine, fundus_png, data={"busy_timeout_s": 2.0})
    holder = sqlite3.connect(str(store_db.database_path(app.config["GLANCESEG"].data_dir)), timeout=1.0,
                             isolation_level=None)
    try:
        with reading(app, image_id, tmp_path, (1280, 800)) as driver:
            tap_image(driver, lesion["x"], lesion["y"])
            assert menu_open(driver)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                driver.find_element(By.ID, "reject").click()
                wait_js(driver, "document.getElementById('reader-status').textContent.indexOf('Not saved') === 0", 60)
            finally:
                holder.execute("ROLLBACK")
            assert "accepted" in driver.find_element(By.ID, f"lesion-{lesion['id']}").get_attribute("class")
            status = driver.find_element(By.ID, "reader-status").text
            assert status.startswith("Not saved:") and "decide again" in status, status
            assert services.store.lesion_states(result_id)[0] == {lesion["id"]: "accept"}
    finally:
        holder.close()
        services.close()
        services.store.close()


def test_report_print_and_pdf_by_touch_with_a_way_back(app, services, fundus_png, tmp_path):
    """The kiosk has no browser menu, back button or Ctrl+P: the report has a Print button, and
    the PDF opens inside an appliance page with a way back to the results."""
    need_browser()
    from selenium.webdriver.common.by import By

    from .helpers import import_photo, login

    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    with touchscreen(app, tmp_path, (1024, 600)) as (driver, base):
        show_reader(driver, base, study.image_id)
        driver.get(f"{base}/study/{study.id}/report")
        wait_js(driver, "document.getElementById('print')")
        for el in driver.find_elements(By.CSS_SELECTOR, ".noprint a, .noprint button"):
            assert el.size["height"] >= 44 and el.size["width"] >= 44, el.text
        driver.execute_script("window.print = function () { window.__printed = (window.__printed || 0) + 1; }")
        driver.find_element(By.ID, "print").click()
        assert driver.execute_script("return window.__printed") == 1
        driver.find_element(By.ID, "pdf-link").click()
        wait_js(driver, "document.getElementById('pdf')")
        assert driver.find_element(By.ID, "nav-worklist").is_displayed()
        csp = driver.execute_async_script("""
            var done = arguments[arguments.length - 1];
            fetch(document.getElementById('pdf').src).then(r => done([r.status, r.headers.get('content-type'),
                                                                      r.headers.get('content-security-policy')]));""")
        assert csp[0] == 200 and csp[1] == "application/pdf" and "frame-ancestors 'self'" in csp[2], csp
        driver.find_element(By.ID, "back").click()
        wait_js(driver, "document.getElementById('signoff')")
        assert driver.current_url.endswith(f"/study/{study.id}/results")


def test_technician_sees_the_queue_and_exports_to_usb_by_touch(app, services, fundus_png, ui_config, tmp_path):
    """The Sync page lists what waits (patient, what, why it failed, in plain words) and writes it
    to a USB stick with one tap; the items stay queued (a stick is no confirmed delivery)."""
    need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from .helpers import import_photo, login

    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services, patient="P-0042")
    items = services.store.outbox(study_id=study.id)
    assert items, "the import queued nothing"
    services.store.record_failure(items[0].id, "HTTPSConnectionPool: Max retries exceeded (Connection refused)", 0.0)
    stick = ui_config.ui.import_roots + "/STICK"
    os.makedirs(stick)
    with touchscreen(app, tmp_path, (1024, 600), "tom") as (driver, base):
        wait_js(driver, "document.getElementById('nav-sync')")
        driver.find_element(By.ID, "nav-sync").click()
        wait_js(driver, "document.getElementById('sync-now')")
        queued = driver.find_element(By.ID, "queued").text
        assert "P-0042" in queued and "photograph" in queued
        assert "The clinic server cannot be reached" in queued  # why it failed, in plain words
        Select(driver.find_element(By.ID, "export-folder")).select_by_value(str(Path(stick).resolve()))
        button = driver.find_element(By.ID, "export-usb")
        assert button.size["height"] >= 44
        button.click()
        wait_js(driver, "document.body.innerText.indexOf('Exported ') >= 0")
        assert "stay queued" in driver.find_element(By.CSS_SELECTOR, ".flash.ok").text
        exported = list(Path(stick).glob("glanceseg-export-*/manifest.json"))
        assert len(exported) == 1
        assert json.loads(exported[0].read_text())["files"]
        assert all(i.state != "delivered" for i in services.store.outbox(study_id=study.id))


SMALL_TARGETS_JS = """
var small = [];
document.querySelectorAll('a, button, select, summary, input').forEach(function (e) {
  var t = e.type;
  if (t === 'hidden' || e.closest('#osk')) { return; }
  var box = (t === 'radio' || t === 'checkbox') ? (e.closest('label') || e) : e;
  var r = box.getBoundingClientRect();
  if (!r.width || !r.height || getComputedStyle(box).visibility === 'hidden') { return; }
  if (r.height < 44 || r.width < 44) {
    small.push(location.pathname + ' ' + e.tagName + '#' + e.id + ' "' + (box.textContent || e.value || '').trim().slice(0, 30)
               + '" ' + Math.round(r.width) + 'x' + Math.round(r.height));
  }
});
return small;
"""


@pytest.mark.parametrize("size", [(1024, 600), (1280, 800)])
def test_every_target_is_a_fingertip_wide(app, services, fundus_png, tmp_path, size):
    """Every link, button, field and choice on every page is at least 44 CSS px each way
    (about 9 mm on the station's screen), radio buttons and ticks by their label."""
    need_browser()
    from selenium.webdriver.common.by import By

    from .helpers import ADMIN_PIN, import_photo, login

    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    driver = chrome(tmp_path, size)
    screen(driver, size)
    small: list[str] = []
    try:
        for srv in served(app):
            driver.get(srv.url + "/login")
            small += driver.execute_script(SMALL_TARGETS_JS)
            driver.find_element(By.ID, "name").send_keys("admin")
            driver.find_element(By.ID, "pin").send_keys(ADMIN_PIN)
            driver.find_element(By.ID, "login").click()
            wait_js(driver, "document.getElementById('nav-worklist')")
            for path in ("/", "/import", "/sync", "/device", "/admin/users", "/admin/audit", "/no-such-page",
                         f"/study/{study.id}/results", f"/study/{study.id}/report", f"/study/{study.id}/pdf"):
                driver.get(srv.url + path)
                wait_js(driver, "document.readyState === 'complete'")
                small += driver.execute_script(SMALL_TARGETS_JS)
    finally:
        driver.quit()
    assert small == [], "\n".join(small)


def test_idle_log_off_mid_reading_returns_to_the_photograph(ui_config, engine, fundus_png, tmp_path):
    """The idle timer logs the clinician off in the middle of a reading; the decision made before
    stays saved, the login page says why, and logging in again reopens the same photograph."""
    need_browser()
    from selenium.webdriver.common.by import By


    from .test_e2e import tap_image

    app, services, image_id, result_id, lesion = reader_app(ui_config, engine, fundus_png, ui={"idle_logout_s": 4.0})
    with reading(app, image_id, tmp_path, (1024, 600)) as driver:
        tap_image(driver, lesion["x"], lesion["y"])
        driver.find_element(By.ID, "reject").click()
        wait_js(driver, f"document.getElementById('lesion-{lesion['id']}').classList.contains('rejected')")
        wait_js(driver, "location.pathname === '/login'", 20)  # left alone: logged off
        assert "inactivity" in driver.find_element(By.TAG_NAME, "main").text
        assert services.store.lesion_states(result_id)[0] == {lesion["id"]: "reject"}
        driver.find_element(By.ID, "name").send_keys("clara")
        driver.find_element(By.ID, "pin").send_keys(PIN)
        driver.find_element(By.ID, "login").click()
        wait_js(driver, "document.body.getAttribute('data-reader-ready') === '1'")
        assert driver.current_url.endswith(f"/reader/{image_id}")
        assert "rejected" in driver.find_element(By.ID, f"lesion-{lesion['id']}").get_attribute("class")
        services.close()
        services.store.close()


def touch_hold(driver: Any, x: float, y: float, hold_s: float = 0.8) -> None:
    """A finger held at screen (x, y) for ``hold_s`` with a pixel of tremor, then lifted."""
    driver.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    end = time.monotonic() + hold_s
    i = 0
    while time.monotonic() < end:
        i += 1
        driver.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x + i % 2, "y": y + (i // 2) % 2}]})
        time.sleep(0.03)
    driver.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def test_pointer_gaze_by_touch_hold_is_looking_not_tapping(app, services, fundus_png, tmp_path):
    """No tracker, a touchscreen: with Pointer gaze on, the clinician holds a finger where they
    look. The live pipeline gets the gaze and shows the lesion there; the hold neither opens a
    menu nor records anything (a short tap still does)."""
    need_browser()
    from selenium.webdriver.common.by import By

    image_id, result_id, lesion = reader_with_a_lesion(app, services, fundus_png)
    services.store.undo(result_id, "clara")  # nothing decided: the lesion shows only once looked at
    with reading(app, image_id, tmp_path, (1280, 800)) as driver:
        driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 2})
        assert not driver.find_elements(By.ID, f"lesion-{lesion['id']}")
        driver.find_element(By.ID, "toggle-pointer").click()
        p = driver.execute_script("return window.glanceToScreen(arguments[0], arguments[1])", lesion["x"], lesion["y"])
        # 1.5 s: on a loaded machine the browser's touch and repeat events can pause for more
        # than the fixation detector's 75 ms gap; a longer look still holds an unbroken fixation.
        touch_hold(driver, p["x"], p["y"], hold_s=1.5)
        time.sleep(0.3)
        assert not menu_open(driver)
        driver.execute_script("return window.glanceFlushGaze()")
        wait_js(driver, f"document.getElementById('lesion-{lesion['id']}')", 60)
        assert services.store.lesion_states(result_id) == ({}, [])
        touch_hold(driver, p["x"], p["y"], hold_s=0.05)  # a tap on it: its menu
        wait_js(driver, "!document.getElementById('lesion-menu').classList.contains('hidden')")


def test_lesion_rings_are_visible_at_the_fitted_view(app, services, fundus_png, tmp_path):
    """At the fitted view a lesion's ring is at least 18 screen px across (its true size was a
    few px); zoomed in far enough, the ring is the lesion's true size again."""
    need_browser()
    image_id, _, lesion = reader_with_a_lesion(app, services, fundus_png)
    with reading(app, image_id, tmp_path, (1024, 600)) as driver:
        ring = f"document.getElementById('lesion-{lesion['id']}').getBoundingClientRect().width"
        assert driver.execute_script("return " + ring) >= 17.5
        true_r = max((lesion["area_px"] / np.pi) ** 0.5 + 4, 6)
        zoom_at(driver, lesion["x"], lesion["y"], 8)
        s = driver.execute_script("return window.glanceView.s")
        assert true_r * s > 9
        assert abs(driver.execute_script("return " + ring) - 2 * true_r * s) < 4  # + the stroke


def test_a_mis_tapped_disable_can_be_undone_on_the_screen(app, tmp_path):
    """Disable is one tap on a touchscreen; Enable on the same page undoes it, and the colleague
    can log in again (there was no way back without a console)."""
    need_browser()
    from selenium.webdriver.common.by import By

    from .helpers import ADMIN_PIN

    with touchscreen(app, tmp_path, (1024, 600), "admin", ADMIN_PIN) as (driver, base):
        wait_js(driver, "document.getElementById('nav-users')")
        driver.find_element(By.ID, "nav-users").click()
        row = lambda: next(r for r in driver.find_elements(By.CSS_SELECTOR, "#users tbody tr") if r.text.startswith("clara"))
        row().find_element(By.TAG_NAME, "button").click()  # Disable
        wait_js(driver, "document.body.innerText.indexOf('User disabled') >= 0")
        enable = row().find_element(By.TAG_NAME, "button")
        assert enable.text == "Enable" and enable.size["height"] >= 44
        enable.click()
        wait_js(driver, "document.body.innerText.indexOf('User enabled again') >= 0")
        driver.find_element(By.ID, "logout").click()
        driver.find_element(By.ID, "name").send_keys("clara")
        driver.find_element(By.ID, "pin").send_keys(PIN)
        driver.find_element(By.ID, "login").click()
        wait_js(driver, "document.getElementById('nav-worklist')")


def test_a_refused_live_stream_is_said_on_the_reader(ui_config, engine, fundus_png, tmp_path):
    """With every reader stream slot taken (here: the only one, by another clinician) the
    server refuses this page's stream (429); the reader says that lesions will not appear and
    what to do, instead of staying silent."""
    need_browser()
    from selenium.webdriver.common.by import By

    from appliance.ui.app import RESERVED_THREADS

    from .helpers import ADMIN_PIN, login

    app, services, image_id, _, _ = reader_app(ui_config, engine, fundus_png, ui={"threads": RESERVED_THREADS + 1})
    other = app.test_client()
    login(other)
    held = other.get(f"/reader/{image_id}/events", buffered=False)  # clara's reader holds the slot
    assert held.status_code == 200
    try:
        with touchscreen(app, tmp_path, (1280, 800), "admin", ADMIN_PIN) as (driver, base):
            driver.get(f"{base}/reader/{image_id}")
            wait_js(driver, "document.body.getAttribute('data-reader-ready') === '1'")
            wait_js(driver, "document.getElementById('reader-status').textContent.indexOf('no longer appear') >= 0", 20)
            assert "Close reader pages" in driver.find_element(By.ID, "reader-status").text
    finally:
        held.close()
        services.close()
        services.store.close()


def test_the_sign_off_is_one_tap_from_the_top_of_the_results(app, services, fundus_png, tmp_path):
    """The results page lists every lesion of every photograph before the sign-off form; on the
    1024x600 screen the clinician had to scroll past all of them. A button at the top goes there,
    and the lesion tables fold away."""
    need_browser()
    from selenium.webdriver.common.by import By

    from .helpers import import_photo, login

    client = app.test_client()
    _, token = login(client)
    study = import_photo(client, token, fundus_png, services)
    with touchscreen(app, tmp_path, (1024, 600)) as (driver, base):
        driver.get(f"{base}/study/{study.id}/results")
        wait_js(driver, "document.getElementById('to-signoff')")
        button = driver.find_element(By.ID, "to-signoff")
        assert button.is_displayed() and button.location["y"] + button.size["height"] <= 600
        assert not driver.find_element(By.CSS_SELECTOR, "table.lesions").is_displayed()  # folded
        button.click()
        wait_js(driver, "document.getElementById('signoff-form').getBoundingClientRect().top < window.innerHeight")
        driver.find_element(By.CSS_SELECTOR, "details.lesion-list > summary").location_once_scrolled_into_view
        driver.find_element(By.CSS_SELECTOR, "details.lesion-list > summary").click()
        assert driver.find_element(By.CSS_SELECTOR, "table.lesions").is_displayed()
