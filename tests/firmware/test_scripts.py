"""Every firmware script: shellcheck-clean, strict mode, --help, and a --dry-run that changes nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from firmware_helpers import REPO, SCRIPTS, SCRIPTS_DIR, need_binary, run_script, tree_state

SHELL_FILES = [SCRIPTS_DIR / s for s in SCRIPTS] + [SCRIPTS_DIR / "lib.sh", REPO / "systemd/glanceseg-kiosk-browser"]


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: p.name)
def test_shellcheck_clean(path: Path) -> None:
    shellcheck = need_binary("shellcheck")
    proc = subprocess.run([shellcheck, "-x", "--severity=style", str(path)], capture_output=True, text=True,
                          timeout=120, cwd=path.parent)
    assert proc.returncode == 0, proc.stdout


def test_shellcheck_can_fail(tmp_path: Path) -> None:
    shellcheck = need_binary("shellcheck")
    bad = tmp_path / "bad"
    bad.write_text("#!/bin/bash\nrm -rf $1/*\n")
    assert subprocess.run([shellcheck, str(bad)], capture_output=True, timeout=60).returncode != 0


@pytest.mark.parametrize("name", SCRIPTS)
def test_strict_mode_and_executable(name: str) -> None:
    path = SCRIPTS_DIR / name
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "set -euo pipefail" in lines[:5]
    assert path.stat().st_mode & 0o111


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name: str) -> None:
    proc = run_script(name, "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"Usage: {name}")
    assert "--dry-run" in proc.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_unknown_option_is_refused(name: str) -> None:
    assert run_script(name, "--no-such-option").returncode != 0


@pytest.mark.parametrize("name", SCRIPTS)
def test_dry_run_prints_steps_and_changes_nothing(name: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    before = tree_state(root)
    proc = run_script(name, "--dry-run", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "==>" in proc.stdout
    assert tree_state(root) == before


@pytest.mark.parametrize("name", ["provision", "factory-reset"])
def test_dry_run_lists_the_commands(name: str, tmp_path: Path) -> None:
    proc = run_script(name, "--dry-run", "--root", str(tmp_path))
    assert "[dry-run] install" in proc.stdout


def test_live_dry_runs_exit_zero() -> None:
    """Without --root (the live system) a dry run only reads and prints."""
    for name in SCRIPTS:
        proc = run_script(name, "--dry-run")
        assert proc.returncode == 0, (name, proc.stderr)
        assert "==>" in proc.stdout, name
