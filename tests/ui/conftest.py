"""Fixtures of the UI tests: an app on a temporary data folder with users, a sample photograph."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from appliance.config import Config, load_config
from appliance.ui import Services, create_app
from appliance.ui.services import standin_live_factory
from appliance.ui import db as uidb
from appliance.ui.users import UserStore

from .helpers import ADMIN_PIN, PIN, synthetic_fundus


@pytest.fixture
def ui_config(tmp_path: Path) -> Config:
    """Configuration on a temporary data folder: 1 MB uploads, lockout after 3 failures."""
    usb = tmp_path / "usb"
    usb.mkdir()
    return load_config(environ={}).replace(
        data={"dir": tmp_path / "data", "max_upload_mb": 1},
        ui={"lockout_attempts": 3, "lockout_s": 300.0, "import_roots": str(usb)},
    )


@pytest.fixture
def fundus_png(tmp_path: Path) -> Path:
    """The synthetic photograph as a PNG file."""
    path = tmp_path / "fundus_a.png"
    cv2.imwrite(str(path), synthetic_fundus())
    return path




@pytest.fixture
def app(ui_config: Config):
    """The UI app with an admin, a clinician and a technician."""
    application = create_app(ui_config, Services(config=ui_config, live_factory=standin_live_factory))
    application.config["TESTING"] = True
    conn = uidb.connect(uidb.database_path(ui_config.data_dir))
    users = UserStore(conn)
    users.create("admin", "admin", ADMIN_PIN)
    users.create("clara", "clinician", PIN)
    users.create("tom", "technician", PIN)
    conn.close()
    yield application
    application.extensions["glanceseg_hub"].close()



