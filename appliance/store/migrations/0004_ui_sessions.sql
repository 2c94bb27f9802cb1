-- 0004_ui_sessions: the UI's logins, held on the device so that logging out ends them.
-- A session cookie is signed, not secret-held: without this table a copy of it (a shared
-- browser profile, a cookie lifted from the kiosk) kept working after the clinician logged
-- out, until the idle timeout. The cookie now carries a random token whose sha256 is a row
-- here; log-out, a new PIN and disabling the user delete the rows. The index serves the
-- per-address login limit (failed logins of one LAN address in the last lockout period).

CREATE TABLE IF NOT EXISTS ui_sessions (
    token_sha256 TEXT PRIMARY KEY,              -- sha256 hex of the cookie's token
    user_id      INTEGER NOT NULL REFERENCES ui_users(id),
    created_at   TEXT NOT NULL,                 -- UTC ISO 8601
    seen_s       REAL NOT NULL                  -- Unix seconds of the last user action
);

CREATE INDEX IF NOT EXISTS ui_sessions_user ON ui_sessions(user_id);

CREATE INDEX IF NOT EXISTS ui_login_attempts_remote ON ui_login_attempts(remote, at);
