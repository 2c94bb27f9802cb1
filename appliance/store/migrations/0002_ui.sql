-- 0002_ui: users, login attempts and the hash-chained, append-only audit log of the UI.
-- Idempotent (IF NOT EXISTS) so the UI can apply it on a database the store's runner has
-- not migrated yet; the runner records it as applied all the same.

CREATE TABLE IF NOT EXISTS ui_users (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL CHECK (role IN ('technician', 'clinician', 'admin')),
    pin_hash        TEXT NOT NULL,          -- scrypt$n$r$p$salt_hex$hash_hex
    active          INTEGER NOT NULL DEFAULT 1,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until    REAL NOT NULL DEFAULT 0, -- Unix seconds
    created_at      TEXT NOT NULL,
    created_by      TEXT
);

CREATE TABLE IF NOT EXISTS ui_login_attempts (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    at         TEXT NOT NULL,
    success    INTEGER NOT NULL,
    remote     TEXT
);

CREATE TABLE IF NOT EXISTS ui_audit (
    seq        INTEGER PRIMARY KEY,          -- monotonic, never reused
    at         TEXT NOT NULL,                -- UTC ISO 8601 (display only; order is seq)
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL DEFAULT '',
    detail     TEXT NOT NULL DEFAULT '{}',   -- JSON, never patient identifiers
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL                 -- sha256(prev_hash | canonical row)
);

CREATE TRIGGER IF NOT EXISTS ui_audit_no_update BEFORE UPDATE ON ui_audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER IF NOT EXISTS ui_audit_no_delete BEFORE DELETE ON ui_audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
