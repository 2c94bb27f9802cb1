"""The Flask app factory of the touchscreen UI.

``create_app(config, services)`` builds the app without doing work at import time; the
blueprints (one per area) are imported inside it. Per-request helpers (:func:`get_db`,
:func:`get_users`, :func:`get_studies`, :func:`audit`) open one SQLite connection per request,
because waitress serves requests on several threads.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any, Optional

from flask import Flask, current_app, g, jsonify, render_template, request
from werkzeug.exceptions import Conflict, HTTPException

from appliance.config import Config, load_config
from appliance.errors import StoreError
from appliance.store import db as store_db
from appliance.ui.audit import AuditLog
from appliance.ui.i18n import translate
from appliance.ui.live import LiveHub, StreamSlots
from appliance.ui.security import csrf_token, load_user
from appliance.ui.services import Services
from appliance.ui.users import UserStore

logger = logging.getLogger(__name__)

#: Waitress workers kept free of reader event streams, for the pages, the API and /healthz.
RESERVED_THREADS = 4


def _secret_key(data_dir: Path) -> bytes:
    """Return the session-signing key, created once (0600) in the data folder."""
    path = data_dir / "ui_secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()


def create_app(config: Optional[Config] = None, services: Optional[Services] = None) -> Flask:
    """Build the UI app.

    Parameters
    ----------
    config
        The appliance configuration (``load_config()`` when None).
    services
        The parts of the appliance the UI calls (defaults built from ``config``).

    Returns
    -------
    Flask
        The WSGI app; ``app.extensions["glanceseg_hub"]`` holds the live sessions.
    """
    config = config or load_config()
    services = services or Services(config=config)
    data_dir = config.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    store_db.open_database(data_dir, config.data.busy_timeout_s).close()

    app = Flask(__name__)
    tls = bool(config.ui.tls_cert and config.ui.tls_key)
    app.config.update(
        SECRET_KEY=_secret_key(data_dir),
        SESSION_COOKIE_NAME="glanceseg_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=tls or config.ui.secure_cookies,
        MAX_CONTENT_LENGTH=int(config.data.max_upload_mb) * 2 ** 20,
        GLANCESEG=config,
        GLANCESEG_SERVICES=services,
        GLANCESEG_DB=store_db.database_path(data_dir),
    )

    app.extensions["glanceseg_hub"] = LiveHub(lambda photo: services.live_factory(photo, services),
                                              _resolver(services), config.glance.display_threshold)
    from appliance.ui.gaze_link import GazeLinks

    app.extensions["glanceseg_hub"].gaze = GazeLinks(config)
    # Reader event streams may hold all but RESERVED_THREADS of waitress's workers.
    app.extensions["glanceseg_streams"] = StreamSlots(config.ui.threads - RESERVED_THREADS)

    from appliance.ui import admin, auth, reader, results, worklist

    for bp in (auth.bp, worklist.bp, reader.bp, results.bp, admin.bp):
        app.register_blueprint(bp)

    app.before_request(load_user)
    app.teardown_appcontext(_close_db)

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        """Liveness for the systemd watchdog's probe: no login, no patient data, no database."""
        return {"ok": True}

    from appliance.ui.audit import detail_text
    from appliance.ui.timefmt import local_time

    app.add_template_filter(local_time, "local_time")
    app.add_template_filter(detail_text, "detail_text")

    @app.context_processor
    def inject() -> dict[str, Any]:
        lang = config.ui.language
        return {"_": lambda msg, **kw: translate(lang, msg, **kw), "csrf_token": csrf_token,
                "user": g.get("user"), "lang": lang, "idle_logout_s": config.ui.idle_logout_s}

    @app.after_request
    def headers(resp: Any) -> Any:
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.endpoint != "static":
            resp.headers.setdefault("Cache-Control", "no-store")
        if config.ui.tls_cert:  # served over TLS: browsers must never fall back to plain HTTP
            resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        message = {
            401: "Please log in.",
            403: "Your role does not allow this.",
            404: "Not found.",
            413: f"The file is too large. The limit is {config.data.max_upload_mb} MB.",
            # werkzeug's own text ("... there is an error in the application") tells a clinician
            # nothing they can act on; what was saved before stays saved.
            500: "The appliance could not finish this. What was saved before is safe. Try again; "
                 "if it happens again, note the time and call the technician.",
        }.get(exc.code or 500, exc.description or exc.name)
        if exc.code in (400, 409, 410, 429) and exc.description:
            message = exc.description
        if request.is_json or request.headers.get("X-CSRF-Token") or request.path.startswith("/api/"):
            return jsonify({"error": translate(config.ui.language, message)}), exc.code
        return render_template("error.html", message=message, code=exc.code), exc.code

    @app.errorhandler(StoreError)
    def store_error(exc: StoreError) -> Any:
        # The store's sentences are written to be shown (a photograph removed by retention, a
        # corrupt file): a clinician reads why, not "Internal Server Error".
        logger.warning("store refused %s: %s", request.path, exc)
        return http_error(Conflict(description=str(exc)))

    logger.info("UI app created (data in %s)", data_dir)
    return app


def get_db() -> sqlite3.Connection:
    """Return this request's connection."""
    if "db" not in g:
        g.db = store_db.connect(current_app.config["GLANCESEG_DB"], current_app.config["GLANCESEG"].data.busy_timeout_s)
    return g.db


def _close_db(exc: Optional[BaseException]) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


def get_services() -> Services:
    """Return the app's services."""
    return current_app.config["GLANCESEG_SERVICES"]


def get_config() -> Config:
    """Return the app's configuration."""
    return current_app.config["GLANCESEG"]


def get_users() -> UserStore:
    """Return the user store over this request's connection."""
    ui = get_config().ui
    return UserStore(get_db(), ui.lockout_attempts, ui.lockout_s)


def get_studies() -> Any:
    """Return the UI's view of the local store (:class:`appliance.ui.studies.StoreStudies`)."""
    return get_services().studies()


def stored_photograph(image_id: int) -> Any:
    """The stored photograph of ``image_id`` as an ``appliance.imaging.io.Photograph``.

    The pixels are the store's checksum-verified PNG; ``fov_deg`` is the one the automatic scan
    used, so the reader's lesions get the same ids as the stored result's.
    """
    from appliance.imaging.io import Photograph

    store = get_services().store
    image = store.get_image(image_id)
    return Photograph(rgb=store.load_image_rgb(image_id), source=image.source_name or f"image {image_id}",
                      sha256=image.source_sha256 or image.sha256, fov_deg=image.fov_deg, dicom=dict(image.camera))


def _resolver(services: Services) -> Any:
    """``(image_id, lesion) -> store lesion id``: the live lesion's id in the stored automatic result.

    The ids match by construction (cell grid + content); one that does not is recorded as an
    added lesion with its mask, and the mismatch is logged.
    """
    from appliance.ui.studies import StoreStudies

    def resolve(image_id: int, lesion: Any) -> Optional[int]:
        studies = StoreStudies(services.store)
        image = studies.image(image_id)
        if image is None:
            return None
        if int(lesion.id) in studies.lesion_ids(image.result_id):
            return int(lesion.id)
        logger.warning("live lesion %d is not in the stored result %d; recorded as an added lesion",
                       lesion.id, image.result_id)
        return int(studies.add(image.result_id, lesion, "glance-live")["id"])

    return resolve


def get_hub() -> LiveHub:
    """Return the live-session hub."""
    return current_app.extensions["glanceseg_hub"]


def audit(action: str, target: str = "", detail: Optional[dict[str, Any]] = None) -> None:
    """Append to the audit log as the logged-in user (or ``system``)."""
    actor = g.user.name if g.get("user") is not None else "system"
    AuditLog(get_db()).append(actor, action, target, detail)
