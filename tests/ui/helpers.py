"""Helpers of the UI tests: sample photograph, gaze recording, login."""


from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest


PIN = "246810"
ADMIN_PIN = "135790"
DEMO_PHOTO = Path(__file__).resolve().parents[2] / "appliance" / "demo" / "IDRiD_03.jpg"
#: Top-left corner and side of the crop of the demo photograph the UI tests read.
CROP = (2000, 768, 768)


def require_services() -> bool:
    """bool: True when CI demands real services (missing ones fail instead of skip)."""
    return os.environ.get("REQUIRE_SERVICES") == "1"


def fundus_crop(path: Path, side: int = 0) -> Path:
    """Write a real fundus crop (of the demo IDRiD_03, CC BY 4.0) as PNG at ``path``.

    A crop keeps the real pipeline fast in tests; this one (inside the field of view, with vessels)
    holds 15 annotated microaneurysms.
    """
    bgr = cv2.imread(str(DEMO_PHOTO))
    if bgr is None:
        pytest.fail(f"the demo photograph {DEMO_PHOTO} is missing")
    x0, y0, full = CROP
    side = side or full
    cv2.imwrite(str(path), bgr[y0:y0 + side, x0:x0 + side])
    return path


def gaze_csv(path: Path, points: list[tuple[float, float]], dwell_ms: int = 400, rate_hz: int = 100,
             px_per_deg: float = 30.0) -> Path:
    """A gaze recording in image px: a fixation on each point, a gap (saccade) after each."""
    rng = np.random.default_rng(1)
    lines = ["timestamp_ns,x,y,worn,px_per_deg"]
    t = 0
    step = int(1e9 / rate_hz)
    for x, y in points:
        for _ in range(dwell_ms * rate_hz // 1000):
            lines.append(f"{t},{x + rng.normal(0, 1.0):.2f},{y + rng.normal(0, 1.0):.2f},1,{px_per_deg}")
            t += step
        for _ in range(5):
            lines.append(f"{t},,,1,{px_per_deg}")
            t += step
    path.write_text("\n".join(lines) + "\n")
    return path


def spread(lesions: list[dict], n: int, min_dist_px: float = 150.0) -> list[dict]:
    """Up to ``n`` of ``lesions`` (best first) at least ``min_dist_px`` apart (distinct fixations)."""
    out: list[dict] = []
    for l in sorted(lesions, key=lambda l: -l["score"]):
        if all(np.hypot(l["x"] - o["x"], l["y"] - o["y"]) >= min_dist_px for o in out):
            out.append(l)
        if len(out) == n:
            break
    return out


def import_photo(client, token: str, path: Path, services, patient: str = "P-9", eye: str = "L"):
    """Upload ``path`` through the import form and wait for its analysis; return the stored study."""
    import io

    resp = client.post("/import", data={"csrf_token": token, "patient_id": patient, "eye": eye, "source": "upload",
                                        "files": (io.BytesIO(path.read_bytes()), path.name)},
                       content_type="multipart/form-data")
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert services.analysis.wait_idle(300), "the analysis did not finish"
    failed = [j for j in services.analysis.jobs() if j.state == "failed"]
    assert not failed, failed[0].error
    return services.store.worklist(limit=1)[0]


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

