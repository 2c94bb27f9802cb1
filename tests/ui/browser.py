"""Real headless Chromium against the real waitress server, for the end-to-end tests."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from appliance.ui.server import make_server

from .helpers import require_services

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def need_browser() -> None:
    """Skip (or fail under REQUIRE_SERVICES=1) without chromium + chromedriver + selenium."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        reason = f"browser tests need {', '.join(missing)} (Debian chromium + chromium-driver)"
        if require_services():
            pytest.fail(reason + " (REQUIRE_SERVICES=1)")
        pytest.skip(reason)


def serve_in_thread(server: Any, name: str) -> Callable[[], None]:
    """Run a waitress ``server`` in a named thread; return the function that stops it.

    waitress has no stop: closing shuts its sockets under the select() of that thread, which
    then fails with EBADF. Expected only while stopping, so only then is it swallowed.
    """
    stopping = threading.Event()

    def run() -> None:
        try:
            server.run()
        except OSError:
            if not stopping.is_set():
                raise

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        server.close()
        thread.join(5)

    return stop


class LiveServer:
    """The app served by waitress on a free loopback port in a thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.server = make_server(app, "127.0.0.1", 0, threads=8)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self._stop = serve_in_thread(self.server, "ui-test-server")

    def close(self) -> None:
        self.app.extensions["glanceseg_hub"].close()
        self._stop()


def chrome(tmp_path: Path, size: tuple[int, int] = (1280, 900)) -> Any:
    """A fresh headless Chromium with its own profile directory and a ``size`` (w, h) window."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={size[0]},{size[1]}", f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


def shot(driver: Any, name: str) -> Path:
    """Save a screenshot under artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def served(app: Any) -> Iterator[LiveServer]:
    """Context: serve ``app`` for a test."""
    srv = LiveServer(app)
    try:
        yield srv
    finally:
        srv.close()
