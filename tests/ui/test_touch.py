"""Touch-only use in real headless Chromium against the real waitress server.

The station has a touchscreen and no keyboard or mouse, and its kiosk (cage + Chromium) has no
system on-screen keyboard: these tests do what a clinician or technician can do with a finger.
"""

from __future__ import annotations

import json
import time
from typing import Any

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
