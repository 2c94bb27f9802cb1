"""Sessions, roles, CSRF and idle log-off for the UI.

CSRF: a random token per session, required on every state-changing request as the form field
``csrf_token`` or the ``X-CSRF-Token`` header (fetch calls). Together with ``SameSite=Strict``
cookies this needs no extra dependency. Idle log-off: the session records the last user action;
a request after ``idle_logout_s`` clears it (the page's own timer also returns to the login screen).
Sessions: the signed cookie names a login recorded on the device (``ui_sessions``), so logging
out, a new PIN or disabling a user ends it for every copy of the cookie, not only this browser's.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import time
from typing import Any, Callable

from flask import abort, current_app, flash, g, redirect, request, session, url_for

logger = logging.getLogger(__name__)

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
#: Endpoints reachable without a login.
PUBLIC_ENDPOINTS = {"auth.login", "auth.setup", "static", "auth.logout", "healthz"}
#: Logging out needs no token: forcing a log-off is harmless, and an expired session has none.
CSRF_EXEMPT = {"auth.logout"}
#: Requests that do not count as user activity (background streams and polls).
PASSIVE_ENDPOINTS = {"reader.events", "reader.tracker"}  # the page's own polls are not a person at work


def csrf_token() -> str:
    """Return the session's CSRF token, creating it on first use."""
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def check_csrf() -> None:
    """Abort 400 when an unsafe request lacks the session's token."""
    if request.method not in UNSAFE_METHODS or request.endpoint in CSRF_EXEMPT:
        return
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    if not expected or not sent or not hmac.compare_digest(str(sent), str(expected)):
        logger.warning("request refused: missing or wrong CSRF token")
        abort(400, description="This form has expired or did not come from this appliance. Reload the page and try again.")


def load_user() -> Any:
    """before_request: load ``g.user``, enforce idle log-off and login for non-public endpoints."""
    from appliance.ui.app import get_users  # late: avoids an import cycle

    g.user = None
    sid = session.get("sid")
    idle_s = current_app.config["GLANCESEG"].ui.idle_logout_s
    now = time.time()
    if sid is not None:
        users = get_users()
        if now - session.get("seen", 0) > idle_s:
            users.end_session(sid)
            session.clear()
            flash("You were logged off after a period of inactivity.")
        else:
            user = users.session_user(sid, idle_s, now)
            if user is None:
                session.clear()
            else:
                g.user = user
                if request.endpoint not in PASSIVE_ENDPOINTS:
                    session["seen"] = now
                    users.touch_session(sid, now)
    check_csrf()
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return None
    if not get_users().has_admin():
        return redirect(url_for("auth.setup"))
    if g.user is None:
        if request.accept_mimetypes.best == "application/json" or request.path.startswith("/api/") or request.is_json:
            abort(401)
        return redirect(url_for("auth.login", next=request.path))
    return None


def roles_required(*roles: str) -> Callable:
    """Decorator: only users with one of ``roles`` (admins always) may call the view."""

    def wrap(view: Callable) -> Callable:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if g.user is None:
                return redirect(url_for("auth.login"))
            if g.user.role.value != "admin" and g.user.role.value not in roles:
                abort(403)
            return view(*args, **kwargs)

        return inner

    return wrap
