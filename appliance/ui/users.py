"""Users of the appliance: per-user PIN (scrypt), roles, lockout after repeated failures.

A PIN is short, so its hash must be slow: hashlib.scrypt (memory-hard, in the standard
library) with a per-user salt. Lockout bounds guessing online; the KDF bounds it offline.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from appliance.hashing import sha256_bytes
from appliance.ui.server import is_loopback

logger = logging.getLogger(__name__)

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
PIN_MIN_DIGITS = 4
PIN_MAX_DIGITS = 12
#: Seconds between writes of a session's last activity: the idle timeout is minutes, and a
#: write per request would put every page view on the database.
SESSION_TOUCH_S = 10.0
#: Failed logins one network address may make per lockout period, in account lockouts' worth.
ADDRESS_FAILURES_PER_LOCKOUT = 3


class Role(str, enum.Enum):
    """What a user may do: technicians import and sync, clinicians read and sign off."""

    TECHNICIAN = "technician"
    CLINICIAN = "clinician"
    ADMIN = "admin"


@dataclass(frozen=True)
class User:
    """A row of ``ui_users`` without its hash."""

    id: int
    name: str
    role: Role
    active: bool


class LoginOutcome(str, enum.Enum):
    """Result of :meth:`UserStore.authenticate`."""

    OK = "ok"
    BAD = "bad"
    LOCKED = "locked"


def hash_pin(pin: str) -> str:
    """Return ``scrypt$n$r$p$salt$hash`` for ``pin``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_pin(pin: str, stored: str) -> bool:
    """Return True when ``pin`` matches ``stored`` (constant-time comparison)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    got = hashlib.scrypt(pin.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(got.hex(), digest)


def check_pin_format(pin: str) -> None:
    """Raise ValueError with a plain sentence when ``pin`` is not 4-12 digits."""
    if not pin.isdigit() or not PIN_MIN_DIGITS <= len(pin) <= PIN_MAX_DIGITS:
        raise ValueError(f"A PIN is {PIN_MIN_DIGITS} to {PIN_MAX_DIGITS} digits.")


def _now_iso() -> str:
    return _iso(time.time())


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


class UserStore:
    """Users over one SQLite connection (tables from ``0002_ui.sql`` and ``0004_ui_sessions.sql``).

    Parameters
    ----------
    conn
        An open connection (autocommit mode).
    lockout_attempts, lockout_s
        Failures in a row that lock an account, and for how long.
    """

    def __init__(self, conn: sqlite3.Connection, lockout_attempts: int = 5, lockout_s: float = 300.0) -> None:
        self.conn = conn
        self.lockout_attempts = lockout_attempts
        self.lockout_s = lockout_s

    def has_admin(self) -> bool:
        """bool: True once an active admin exists (first start is over)."""
        row = self.conn.execute("SELECT 1 FROM ui_users WHERE role='admin' AND active=1 LIMIT 1").fetchone()
        return row is not None

    def create(self, name: str, role: str, pin: str, created_by: Optional[str] = None) -> User:
        """Create a user.

        Raises
        ------
        ValueError
            If the name is empty or taken, the role unknown, or the PIN malformed.
        """
        name = name.strip()
        if not name or len(name) > 40 or not name.replace(" ", "").replace("-", "").replace(".", "").isalnum():
            raise ValueError("A user name is 1 to 40 letters, digits, spaces, dots or dashes.")
        role_v = Role(role)
        check_pin_format(pin)
        try:
            cur = self.conn.execute(
                "INSERT INTO ui_users(name, role, pin_hash, created_at, created_by) VALUES (?,?,?,?,?)",
                (name, role_v.value, hash_pin(pin), _now_iso(), created_by),
            )
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"A user named {name!r} already exists.") from exc
        logger.info("user created with role %s", role_v.value)
        return User(int(cur.lastrowid), name, role_v, True)

    def list(self) -> list[User]:
        """Return every user, by name."""
        rows = self.conn.execute("SELECT id, name, role, active FROM ui_users ORDER BY name").fetchall()
        return [User(r["id"], r["name"], Role(r["role"]), bool(r["active"])) for r in rows]

    def get(self, user_id: int) -> Optional[User]:
        """Return the user with ``user_id``, or None."""
        r = self.conn.execute("SELECT id, name, role, active FROM ui_users WHERE id=?", (user_id,)).fetchone()
        return None if r is None else User(r["id"], r["name"], Role(r["role"]), bool(r["active"]))

    def set_active(self, user_id: int, active: bool) -> None:
        """Enable or disable a user (users are never deleted: the audit log names them).

        Disabling ends the user's sessions at once, not at their next idle timeout.
        """
        self.conn.execute("UPDATE ui_users SET active=? WHERE id=?", (int(active), user_id))
        if not active:
            self.end_sessions(user_id)

    def by_name(self, name: str) -> Optional[User]:
        """Return the user called ``name``, or None."""
        r = self.conn.execute("SELECT id FROM ui_users WHERE name=?", (name.strip(),)).fetchone()
        return None if r is None else self.get(int(r["id"]))

    def set_pin(self, user_id: int, pin: str) -> None:
        """Give a user a new PIN (a forgotten one) and lift any lockout.

        Raises
        ------
        ValueError
            If the PIN is malformed.
        """
        check_pin_format(pin)
        self.conn.execute("UPDATE ui_users SET pin_hash=?, failed_attempts=0, locked_until=0 WHERE id=?",
                          (hash_pin(pin), user_id))
        # A new PIN is given when the old one may be known: whoever logged in with it is out.
        self.end_sessions(user_id)

    def unlock(self, user_id: int) -> None:
        """Lift a lockout now (someone on the LAN kept guessing this account's PIN)."""
        self.conn.execute("UPDATE ui_users SET failed_attempts=0, locked_until=0 WHERE id=?", (user_id,))

    def authenticate(self, name: str, pin: str, remote: str = "", now_s: Optional[float] = None) -> tuple[LoginOutcome, Optional[User]]:
        """Check a PIN, counting failures and locking the account after too many.

        Returns
        -------
        (LoginOutcome, User or None)
            ``LOCKED`` while the account is locked, even for the right PIN.
        """
        now_s = time.time() if now_s is None else now_s
        r = self.conn.execute(
            "SELECT id, name, role, active, pin_hash, failed_attempts, locked_until FROM ui_users WHERE name=?",
            (name,),
        ).fetchone()
        outcome = LoginOutcome.BAD
        user = None
        if self._address_blocked(remote, now_s):
            hash_pin(pin)
            outcome = LoginOutcome.LOCKED
            logger.warning("login refused: too many failed PINs from one network address")
        elif r is None or not r["active"]:
            hash_pin(pin)  # same cost as a real check: no user enumeration by timing
        elif r["locked_until"] > now_s:
            outcome = LoginOutcome.LOCKED
        elif verify_pin(pin, r["pin_hash"]):
            outcome = LoginOutcome.OK
            user = User(r["id"], r["name"], Role(r["role"]), True)
            self.conn.execute("UPDATE ui_users SET failed_attempts=0, locked_until=0 WHERE id=?", (r["id"],))
        else:
            failed = r["failed_attempts"] + 1
            locked = now_s + self.lockout_s if failed >= self.lockout_attempts else 0
            self.conn.execute(
                "UPDATE ui_users SET failed_attempts=?, locked_until=? WHERE id=?",
                (0 if locked else failed, locked, r["id"]),
            )
            if locked:
                outcome = LoginOutcome.LOCKED
                logger.warning("account locked after %d failed PINs", failed)
        self.conn.execute(
            "INSERT INTO ui_login_attempts(name, at, success, remote) VALUES (?,?,?,?)",
            (name[:40], _iso(now_s), int(outcome is LoginOutcome.OK), remote),
        )
        return outcome, user

    def _address_blocked(self, remote: str, now_s: float) -> bool:
        """Whether ``remote`` failed too many logins lately, whatever names it tried.

        The account lockout bounds guesses at one account; a LAN host trying a few PINs at
        every account stays under it. So one network address gets
        :data:`ADDRESS_FAILURES_PER_LOCKOUT` × ``lockout_attempts`` failures per ``lockout_s``.
        Loopback is the touchscreen itself (clinicians' typos must not lock the station) and
        is not limited this way.
        """
        if not remote or is_loopback(remote):
            return False
        since = _iso(now_s - self.lockout_s)
        row = self.conn.execute(
            "SELECT COUNT(*) FROM ui_login_attempts WHERE remote=? AND success=0 AND at >= ?",
            (remote, since)).fetchone()
        return int(row[0]) >= ADDRESS_FAILURES_PER_LOCKOUT * self.lockout_attempts

    def start_session(self, user_id: int, now_s: Optional[float] = None) -> str:
        """Record a login and return the token its cookie carries.

        Only the token's sha256 is stored, so a copy of the database opens no session. Sessions
        idle for over a day are pruned here: their cookies are refused by the idle timeout
        anyway, and the table must not grow on a device that runs for years.
        """
        now_s = time.time() if now_s is None else now_s
        token = secrets.token_urlsafe(32)
        self.conn.execute("DELETE FROM ui_sessions WHERE seen_s < ?", (now_s - 86400.0,))
        self.conn.execute("INSERT INTO ui_sessions(token_sha256, user_id, created_at, seen_s) VALUES (?,?,?,?)",
                          (sha256_bytes(token.encode()), user_id, _now_iso(), now_s))
        return token

    def session_user(self, token: str, idle_s: float, now_s: Optional[float] = None) -> Optional[User]:
        """Return the active user whose live session ``token`` is, or None.

        None for a token logged out, replaced by a new PIN, of a disabled user, or idle for
        longer than ``idle_s`` by the device's own record (a replayed cookie cannot vouch for
        its own activity; the record lags by up to :data:`SESSION_TOUCH_S`).
        """
        now_s = time.time() if now_s is None else now_s
        r = self.conn.execute(
            "SELECT u.id, u.name, u.role, u.active, s.seen_s FROM ui_sessions s JOIN ui_users u ON u.id = s.user_id "
            "WHERE s.token_sha256=?", (sha256_bytes(token.encode()),)).fetchone()
        if r is None or not r["active"] or now_s - r["seen_s"] > idle_s + SESSION_TOUCH_S:
            return None
        return User(r["id"], r["name"], Role(r["role"]), True)

    def touch_session(self, token: str, now_s: Optional[float] = None) -> None:
        """Record user activity on a session (at most one write in 10 s per session)."""
        now_s = time.time() if now_s is None else now_s
        self.conn.execute("UPDATE ui_sessions SET seen_s=? WHERE token_sha256=? AND seen_s < ?",
                          (now_s, sha256_bytes(token.encode()), now_s - SESSION_TOUCH_S))

    def end_session(self, token: str) -> None:
        """Log one session out: its cookie, wherever a copy of it is, opens nothing any more."""
        self.conn.execute("DELETE FROM ui_sessions WHERE token_sha256=?", (sha256_bytes(token.encode()),))

    def end_sessions(self, user_id: int) -> int:
        """Log every session of ``user_id`` out; return how many there were."""
        return self.conn.execute("DELETE FROM ui_sessions WHERE user_id=?", (user_id,)).rowcount
