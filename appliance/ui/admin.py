"""Sync, device status, users and the audit log."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from appliance.errors import ApplianceError, StoreError
from appliance.ui.app import audit, get_config, get_db, get_services, get_users
from appliance.ui.importing import ImportRefused, candidate_folders, resolve_folder
from appliance.ui.audit import AuditLog
from appliance.ui.reader import tracker_status
from appliance.ui.security import roles_required
from appliance.ui.sync_panel import queued_items
from appliance.ui.users import Role

logger = logging.getLogger(__name__)

bp = Blueprint("admin", __name__)


@bp.route("/sync", methods=["GET", "POST"])
@roles_required("technician", "clinician")
def sync() -> Any:
    """Pending items, last successful sync, errors in plain words, and "Sync now"."""
    services = get_services()
    if request.method == "POST" and request.form.get("action") == "export":
        _export_to_usb(services)
        return redirect(url_for("admin.sync"))
    if request.method == "POST":
        try:
            message = services.sync_now()
        except ApplianceError as exc:
            message = f"Sync could not start: {exc}"
        audit("sync", "", {"message": message[:200]})
        flash(message, "ok")
        return redirect(url_for("admin.sync"))
    status = dict(services.sync_status())
    return render_template("sync.html", status=status, queued=queued_items(services.store),
                           folders=[str(f) for f in candidate_folders(get_config())])


def _export_to_usb(services: Any) -> None:
    """Write every undelivered item to the chosen USB folder and say what was written.

    Why: ``glanceseg export-usb`` needs a console; a station that never sees a network had no
    way to move its results to the clinic by touch. Only folders the import page offers (the
    import roots and the sticks mounted in them) are accepted.
    """
    from appliance.sync.usb_export import export_undelivered

    try:
        dest = resolve_folder(request.form.get("folder", ""), get_config())
    except ImportRefused:
        flash("Plug in a USB stick and choose it in the list, then export again.", "error")
        return
    try:
        report = export_undelivered(services.store, dest)
    except StoreError as exc:
        flash(f"Nothing was exported: {exc}", "error")
        return
    audit("export_usb", "", {"files": report.files, "studies": report.studies, "skipped": len(report.skipped)})
    flash(f"Exported {report.files} file(s) of {report.studies} study(ies) to {report.folder}. They stay queued "
          "here until the clinic server confirms it has them.", "ok")
    if report.skipped:
        flash(f"{len(report.skipped)} item(s) could not be written and are NOT on the stick; they stay queued "
              "here. Ask the administrator to check this appliance.", "error")


@bp.route("/device")
def device() -> Any:
    """Tracker status, model version and sha, disk free."""
    services = get_services()
    return render_template("device.html", tracker=tracker_status(), model=services.model_info(),
                           disk_free_mb=services.disk_free_mb())


@bp.route("/admin/users", methods=["GET", "POST"])
@roles_required("admin")
def users() -> Any:
    """List and create users (admins only); users are disabled, never deleted."""
    store = get_users()
    status = 200
    if request.method == "POST":
        if request.form.get("action") in ("disable", "enable"):
            try:
                uid = int(request.form.get("user_id", ""))
            except ValueError:
                abort(400, description="Unknown user.")
            if uid == g.user.id:
                flash("You cannot disable yourself.", "error")
            elif request.form.get("action") == "enable":
                # A mis-tap on Disable locked a colleague out with no way back on this screen.
                store.set_active(uid, True)
                audit("user_enabled", f"user:{uid}")
                flash("User enabled again.", "ok")
            else:
                store.set_active(uid, False)
                audit("user_disabled", f"user:{uid}")
                flash("User disabled. 'Enable' below undoes it.", "ok")
        else:
            try:
                user = store.create(request.form.get("name", ""), request.form.get("role", ""),
                                    request.form.get("pin", ""), created_by=g.user.name)
            except ValueError as exc:
                flash(str(exc), "error")
                status = 400
            else:
                audit("user_created", f"user:{user.id}", {"role": user.role.value})
                flash(f"User {user.name} created.", "ok")
                return redirect(url_for("admin.users"))
    return render_template("users.html", users=store.list(), roles=[r.value for r in Role]), status


@bp.route("/admin/audit")
@roles_required("admin")
def audit_log() -> Any:
    """The audit log, newest first, with the result of the hash-chain check."""
    log = AuditLog(get_db())
    try:
        offset = max(0, int(request.args.get("offset", "0")))
    except ValueError:
        abort(400)
    broken = log.verify(full=request.args.get("check") == "all")
    return render_template("audit.html", entries=log.entries(limit=200, offset=offset), broken=broken, offset=offset)
