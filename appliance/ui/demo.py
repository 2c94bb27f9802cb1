"""``--demo``: a throwaway data folder with the sample photographs and a demo clinician.

The sample photographs are the two IDRiD photographs (with attribution) in ``appliance/demo/``;
the scikit-image fundus crop (CC0) is used when that folder is empty.
"""

from __future__ import annotations

import logging
import secrets
import shutil
from pathlib import Path
from typing import Any

from appliance.config import Config

logger = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm"}


def sample_photographs() -> list[Path]:
    """The demo photographs shipped in ``appliance/demo`` (or the scikit-image crop)."""
    found = sorted(p for p in DEMO_DIR.glob("*") if p.suffix.lower() in SUFFIXES) if DEMO_DIR.is_dir() else []
    if not found:
        try:
            import skimage

            crop = Path(skimage.__file__).parent / "data" / "microaneurysms.png"
            found = [crop] if crop.is_file() else []
        except ImportError:
            pass
    return found


def prepare_demo(config: Config, services: Any) -> str:
    """Create the admin and demo clinician and import the samples; return the clinician's PIN.

    The samples go through the same path as any import: validated, then analysed (scan mode)
    by the services' background worker and stored; the worklist shows them being analysed.

    The admin PIN is the clinician's reversed (printed by ``serve``), so one number is enough to
    explore every screen.
    """
    from appliance.store import db as store_db
    from appliance.ui.audit import AuditLog
    from appliance.ui.importing import import_bytes
    from appliance.ui.users import UserStore

    data_dir = config.data_dir
    pin = f"{secrets.randbelow(10 ** 6):06d}"
    conn = store_db.open_database(data_dir, config.data.busy_timeout_s)
    try:
        users = UserStore(conn)
        users.create("admin", "admin", pin[::-1], created_by="demo")
        users.create("demo", "clinician", pin, created_by="demo")
        users.create("tech", "technician", pin, created_by="demo")
        usb = data_dir / "usb" / "demo-stick"
        usb.mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(sample_photographs()):
            shutil.copy2(path, usb / path.name)
            import_bytes(path.read_bytes(), path.name, f"DEMO-{i + 1:03d}", "R" if i % 2 == 0 else "L",
                         config, services)
        AuditLog(conn).append("system", "demo_prepared", "", {"photographs": len(sample_photographs())})
    finally:
        conn.close()
    logger.info("demo data prepared in %s", data_dir)
    return pin
