"""``glanceseg users``: the console's way back in (list, unlock, set a forgotten PIN).

Why on the console: the UI has no PIN reset, an admin who forgot the PIN has no other way in,
and someone on the LAN who keeps guessing can hold an account locked. Whoever can run this
already holds the device; each change goes to the UI's audit log as ``console``. A PIN is
never an argument (it would land in the shell history): it is asked twice on the terminal,
or read as one line from standard input when a script pipes it in.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from appliance.config import Config
from appliance.errors import ApplianceError


def register(subparsers: Any) -> None:
    """Add ``users list|unlock|set-pin``."""
    p = subparsers.add_parser("users", help="list UI users, unlock one, or set a forgotten PIN (console only)")
    sub = p.add_subparsers(dest="users_command", required=True)
    sub.add_parser("list", help="every user with role, state and lockout").set_defaults(handler=run_list)
    unlock = sub.add_parser("unlock", help="lift a user's PIN lockout now")
    unlock.add_argument("name")
    unlock.set_defaults(handler=run_unlock)
    pin = sub.add_parser("set-pin", help="give a user a new PIN (asked on the terminal) and unlock them")
    pin.add_argument("name")
    pin.set_defaults(handler=run_set_pin)


def _open(config: Config) -> tuple[Any, Any]:
    from appliance.store.db import open_database
    from appliance.ui.users import UserStore

    conn = open_database(config.data_dir)
    return conn, UserStore(conn, config.ui.lockout_attempts, config.ui.lockout_s)


def _user(users: Any, name: str) -> Any:
    user = users.by_name(name)
    if user is None:
        raise ApplianceError(f"There is no user named {name!r} (glanceseg users list shows them).")
    return user


def _audit(conn: Any, action: str, user: Any) -> None:
    from appliance.ui.audit import AuditLog

    AuditLog(conn).append("console", action, f"user:{user.id}")


def run_list(args: argparse.Namespace, config: Config) -> int:
    """Print one line per user."""
    import time

    conn, users = _open(config)
    try:
        if not users.list():
            print("No users yet: the first start of the touchscreen asks for an administrator's PIN.")
        for user in users.list():
            locked = conn.execute("SELECT locked_until FROM ui_users WHERE id=?", (user.id,)).fetchone()[0]
            state = "active" if user.active else "disabled"
            if locked > time.time():
                state += f", locked for {int(locked - time.time())} s"
            print(f"{user.name}\t{user.role.value}\t{state}")
    finally:
        conn.close()
    return 0


def run_unlock(args: argparse.Namespace, config: Config) -> int:
    """Lift one user's lockout."""
    conn, users = _open(config)
    try:
        user = _user(users, args.name)
        with conn:
            users.unlock(user.id)
            _audit(conn, "user_unlocked", user)
    finally:
        conn.close()
    print(f"{user.name} is unlocked.")
    return 0


def _read_pin() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    pin = getpass.getpass("New PIN (4 to 12 digits): ")
    if getpass.getpass("The same PIN again: ") != pin:
        raise ApplianceError("The two PINs differ; nothing was changed.")
    return pin


def run_set_pin(args: argparse.Namespace, config: Config) -> int:
    """Set a user's PIN from the terminal and unlock them."""
    conn, users = _open(config)
    try:
        user = _user(users, args.name)
        try:
            with conn:
                users.set_pin(user.id, _read_pin())
                _audit(conn, "user_pin_set", user)
        except ValueError as exc:
            raise ApplianceError(f"{exc} Nothing was changed.") from exc
    finally:
        conn.close()
    print(f"{user.name} has a new PIN and is unlocked.")
    return 0
