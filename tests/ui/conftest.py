"""Fixtures of the UI tests: the app on a temporary data folder with the real store and the real
glance engine (saliency only, for speed), users, and a real fundus photograph."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import Config, load_config
from appliance.ui.app import create_app
from appliance.ui.services import Services
from appliance.store import db as store_db
from appliance.ui.users import UserStore

from .helpers import ADMIN_PIN, PIN, fundus_crop


@pytest.fixture
def ui_config(tmp_path: Path) -> Config:
    """Configuration on a temporary data folder: 2 MB uploads, lockout after 3 failures."""
    usb = tmp_path / "usb"
    usb.mkdir()
    return load_config(environ={}).replace(
        data={"dir": tmp_path / "data", "max_upload_mb": 2},
        ui={"lockout_attempts": 3, "lockout_s": 300.0, "import_roots": str(usb)},
    )


@pytest.fixture(scope="session")
def engine():
    """The real glance engine without the model (saliency + DKF): what most UI tests read with."""
    from appliance.glance.engine import GlanceEngine

    return GlanceEngine(load_config(environ={}), predictor=None)


@pytest.fixture
def fundus_png(tmp_path: Path) -> Path:
    """A real fundus photograph: a 768×768 crop of the demo IDRiD_03 as PNG."""
    return fundus_crop(tmp_path / "fundus_a.png")


@pytest.fixture
def services(ui_config: Config, engine):
    """Real services: the store on the temporary folder, the saliency-only engine."""
    svc = Services(config=ui_config, engine=engine)
    yield svc
    svc.close()
    svc.store.close()


def add_users(config: Config) -> None:
    """An admin, a clinician (clara) and a technician (tom)."""
    conn = store_db.open_database(config.data_dir)
    users = UserStore(conn)
    users.create("admin", "admin", ADMIN_PIN)
    users.create("clara", "clinician", PIN)
    users.create("tom", "technician", PIN)
    conn.close()


@pytest.fixture
def app(ui_config: Config, services):
    """The UI app with an admin, a clinician and a technician."""
    application = create_app(ui_config, services)
    application.config["TESTING"] = True
    add_users(ui_config)
    yield application
    application.extensions["glanceseg_hub"].close()
