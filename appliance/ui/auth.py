"""Log in with name and PIN, log out, and the first-start admin PIN."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for

from appliance.ui.app import audit, get_users
from appliance.ui.security import csrf_token
from appliance.ui.users import LoginOutcome, Role

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)


def _safe_next(target: str) -> str:
    """Only same-site relative paths are followed after login (no open redirect).

    Whitespace and control characters are refused outright: browsers and Werkzeug drop a tab
    from ``/\t/evil.example`` and read the rest as ``//evil.example``, another host.
    """
    if (target.startswith("/") and target.isprintable() and not any(c.isspace() or c == "\\" for c in target)):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and not parts.path.startswith("//"):
            return target
    return url_for("worklist.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Show the login form; check the PIN and start a session."""
    users = get_users()
    if not users.has_admin():
        return redirect(url_for("auth.setup"))
    if request.method == "POST":
        name = request.form.get("name", "").strip()
        pin = request.form.get("pin", "")
        outcome, user = users.authenticate(name, pin, remote=request.remote_addr or "")
        if outcome is LoginOutcome.OK and user is not None:
            session.clear()
            session["sid"] = users.start_session(user.id)
            session["seen"] = time.time()
            csrf_token()
            g.user = user
            audit("login", f"user:{user.id}")
            return redirect(_safe_next(request.form.get("next", "")))
        # One message for a wrong PIN, an unknown name and a locked account, so the page does
        # not tell a guesser which names exist; it says what a locked-out user needs to know.
        flash(f"Wrong name or PIN. After {users.lockout_attempts} wrong PINs in a row an account is locked "
              f"for {max(1, round(users.lockout_s / 60))} minutes.")
        # A user's name is recorded; any other text is not: it is often the PIN typed into the
        # name field, which the audit page would show to every admin.
        tried = users.by_name(name)
        audit("login_locked" if outcome is LoginOutcome.LOCKED else "login_failed",
              f"user:{tried.id}" if tried is not None else "",
              {"name": tried.name} if tried is not None else {"unknown_name": True})
        return render_template("login.html", next=request.form.get("next", ""), name=name), 401
    return render_template("login.html", next=request.args.get("next", ""), name="")


@bp.route("/logout", methods=["POST", "GET"])
def logout() -> Any:
    """End the session (GET is allowed for the idle timer; it only ever logs out).

    The idle timer sends ``reason=idle`` and the page it left as ``next`` (a same-site path
    only): the login page says why the session ended (a message flashed before the session was
    cleared would be cleared with it), and logging in again returns to that page instead of the
    worklist, so a reading interrupted by the timer goes on.
    """
    if g.get("user") is not None:
        audit("logout", f"user:{g.user.id}")
    if session.get("sid"):
        get_users().end_session(session["sid"])
    session.clear()
    if request.args.get("reason") == "idle":
        flash("You were logged off after a period of inactivity. Your decisions were saved as you made them.")
    target = request.args.get("next", "")
    if target and _safe_next(target) == target:
        return redirect(url_for("auth.login", next=target))
    return redirect(url_for("auth.login"))


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> Any:
    """First start: create the first admin with a PIN chosen on the device."""
    users = get_users()
    if users.has_admin():
        return redirect(url_for("auth.login"))
    if request.method == "POST":
        name = request.form.get("name", "admin").strip() or "admin"
        pin, again = request.form.get("pin", ""), request.form.get("pin2", "")
        if pin != again:
            flash("The two PINs differ.")
        else:
            try:
                user = users.create(name, Role.ADMIN.value, pin, created_by="first-start")
            except ValueError as exc:
                flash(str(exc))
            else:
                g.user = user
                audit("user_created", f"user:{user.id}", {"role": "admin", "first_start": True})
                flash("Administrator created. Please log in.")
                return redirect(url_for("auth.login"))
    return render_template("setup.html")
