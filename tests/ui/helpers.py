"""Helpers of the UI tests: sample photograph, gaze recording, login."""


from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.config import Config, load_config

PIN = "246810"
ADMIN_PIN = "135790"
#: Dark dots (x, y, radius) of the synthetic fundus photograph: what the gaze looks at.
DOTS = [(190, 150, 4), (430, 200, 4), (300, 330, 5)]
SIZE = (640, 480)


def require_services() -> bool:
    """bool: True when CI demands real services (missing ones fail instead of skip)."""
    return os.environ.get("GLANCESEG_REQUIRE_SERVICES") == "1"


def synthetic_fundus() -> np.ndarray:
    """A 640×480 fundus-like RGB photograph with a few dark red dots at :data:`DOTS`."""
    rng = np.random.default_rng(5)
    w, h = SIZE
    img = np.zeros((h, w, 3), np.uint8)
    cv2.circle(img, (w // 2, h // 2), 230, (40, 110, 200), -1)  # BGR: orange-red retina
    noise = rng.normal(0, 6, (h, w, 3))
    img = np.clip(img.astype(float) + noise * (img > 0), 0, 255).astype(np.uint8)
    cv2.line(img, (120, 240), (560, 250), (30, 60, 140), 5)  # a vessel
    for x, y, r in DOTS:
        cv2.circle(img, (x, y), r, (25, 40, 110), -1)
    return img



def gaze_csv(path: Path, dwell_ms: int = 400, rate_hz: int = 100) -> Path:
    """A gaze recording in image px: a fixation on each dot of :data:`DOTS`, saccades between."""
    rng = np.random.default_rng(1)
    lines = ["timestamp_ns,x,y,worn,px_per_deg"]
    t = 0
    step = int(1e9 / rate_hz)
    for x, y, _ in DOTS:
        for _ in range(dwell_ms * rate_hz // 1000):
            lines.append(f"{t},{x + rng.normal(0, 1.5):.2f},{y + rng.normal(0, 1.5):.2f},1,30")
            t += step
        for _ in range(5):  # blink / saccade gap
            lines.append(f"{t},,,1,30")
            t += step
    path.write_text("\n".join(lines) + "\n")
    return path


def csrf_of(html: str) -> str:
    """Return the CSRF token embedded in a page."""
    m = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert m, "page carries no CSRF token"
    return m.group(1)


def login(client, name: str = "clara", pin: str = PIN):
    """Log in through the form; return the response and the session's CSRF token."""
    token = csrf_of(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"name": name, "pin": pin, "csrf_token": token})
    page = client.get("/").get_data(as_text=True)
    return resp, csrf_of(page)

