"""``glanceseg users``: the console's way back in for a forgotten PIN or a held lockout."""

from __future__ import annotations

import io

from appliance.cli import main
from appliance.store import db as store_db
from appliance.ui.audit import AuditLog
from appliance.ui.users import LoginOutcome, UserStore

from .conftest import add_users
from .helpers import PIN


def _users(config):
    conn = store_db.open_database(config.data_dir)
    return conn, UserStore(conn, config.ui.lockout_attempts, config.ui.lockout_s)


def test_set_pin_unlock_and_list_from_the_console(ui_config, monkeypatch, capsys):
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(ui_config.data_dir))
    ui_config.data_dir.mkdir(parents=True)
    add_users(ui_config)
    conn, users = _users(ui_config)
    for _ in range(5):  # someone on the LAN guessed until clara was locked out
        users.authenticate("clara", "000000")
    assert users.authenticate("clara", PIN)[0] is LoginOutcome.LOCKED
    assert main(["users", "list"]) == 0
    assert "clara\tclinician\tactive, locked for" in capsys.readouterr().out

    assert main(["users", "unlock", "clara"]) == 0
    assert users.authenticate("clara", PIN)[0] is LoginOutcome.OK

    monkeypatch.setattr("sys.stdin", io.StringIO("24681357\n"))  # a script pipes the new PIN in
    assert main(["users", "set-pin", "clara"]) == 0
    assert users.authenticate("clara", PIN)[0] is LoginOutcome.BAD
    assert users.authenticate("clara", "24681357")[0] is LoginOutcome.OK

    monkeypatch.setattr("sys.stdin", io.StringIO("12\n"))
    assert main(["users", "set-pin", "clara"]) == 2
    assert main(["users", "unlock", "nobody"]) == 2
    assert "Nothing was changed" in capsys.readouterr().err and users.authenticate("clara", "24681357")[0] is LoginOutcome.OK
    actions = [(e.actor, e.action) for e in AuditLog(conn).entries()]
    assert ("console", "user_pin_set") in actions and ("console", "user_unlocked") in actions
    conn.close()


def test_listing_no_users_says_so(ui_config, monkeypatch, capsys):
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(ui_config.data_dir))
    ui_config.data_dir.mkdir(parents=True)
    assert main(["users", "list"]) == 0
    assert "No users yet" in capsys.readouterr().out
