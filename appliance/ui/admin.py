"""Sync, device status, users and the audit log."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from appliance.errors import ApplianceError
from appliance.ui.app import audit, get_db, get_services, get_users
from appliance.ui.audit import AuditLog
from appliance.ui.reader import tracker_status
from appliance.ui.security import roles_required
from appliance.ui.users import Role

logger = logging.getLogger(__name__)

bp = Blueprint("admin", __name__)


@bp.route("/sync", methods=["GET", "POST"])
@roles_required("technician", "clinician")
def sync() -> Any:
    """Pending items, last successful sync, errors in plain words, and "Sync now"."""
    services = get_services()
    if request.method == "POST":
        try:
            message = services.sync_now()
        except ApplianceError as exc:
            message = f"Sync could not start: {exc}"
        audit("sync", "", {"message": message[:200]})
        flash(message, "ok")
        return redirect(url_for("admin.sync"))
    status = dict(services.sync_status())
    return render_template("sync.html", status=status)


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
        if request.form.get("action") == "disable":
            try:
                uid = int(request.form.get("user_id", ""))
            except ValueError:
                abort(400, description="Unknown user.")
            if uid == g.user.id:
                flash("You cannot disable yourself.", "error")
            else:
                store.set_active(uid, False)
                audit("user_disabled", f"user:{uid}")
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
    broken = log.verify()
    return render_template("audit.html", entries=log.entries(limit=200, offset=offset), broken=broken, offset=offset)
