"""Helpers of the firmware tests: running the scripts, hashing trees, seeding a staged root."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO / "firmware_scripts"
SYSTEMD_DIR = REPO / "systemd"
SCRIPTS = ["provision", "build-trt-engines", "healthcheck", "collect-logs", "factory-reset"]
UNITS = ["glanceseg.service", "glanceseg-sync.service", "glanceseg-sync.timer", "glanceseg-kiosk.service"]
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
HOST_UNIT_DIR = Path("/usr/lib/systemd/system")


def need_binary(name: str) -> str:
    """Path of a binary; skip the test (fail when CI requires services) when absent."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install {'shellcheck' if name == 'shellcheck' else 'systemd'})"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    return path


def run_script(name: str, *args: str, env: Optional[dict] = None, check: bool = False,
               stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run one firmware script and return its completed process (text output)."""
    proc = subprocess.run(
        [str(SCRIPTS_DIR / name), *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})},
        input=stdin if stdin is not None else "",
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def tree_state(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its type, mode, owner, mtime and content hash or link target."""
    state: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if path.is_symlink():
            state[rel] = ("link", os.readlink(path))
        elif path.is_file():
            state[rel] = ("file", st.st_mode, st.st_uid, st.st_mtime_ns,
                          hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            state[rel] = ("dir", st.st_mode, st.st_uid)
    return state


def seed_base_system(root: Path) -> str:
    """Give a staged root what a flashed Jetson already has: systemd's units, and cage.

    Returns how cage got there: ``"real"`` (the host's binary) or ``"stub"``.
    """
    dest = root / "usr/lib/systemd/system"
    if not dest.exists():
        shutil.copytree(HOST_UNIT_DIR, dest, symlinks=True)
    cage = root / "usr/bin/cage"
    cage.parent.mkdir(parents=True, exist_ok=True)
    host_cage = shutil.which("cage")
    if host_cage:
        shutil.copy2(host_cage, cage)
        return "real"
    cage.write_text("#!/bin/sh\nexit 0\n")
    cage.chmod(0o755)
    return "stub"
