"""The unit files: their promises read from the files, then checked by systemd itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from firmware_helpers import SYSTEMD_DIR, UNITS, need_binary


def directives(unit: str) -> dict[str, list[str]]:
    """``Key -> [values]`` of one unit file (continuation lines joined, comments dropped)."""
    out: dict[str, list[str]] = {}
    text = (SYSTEMD_DIR / unit).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(" ".join(value.split()))
    return out


def test_app_service_is_notify_with_watchdog_and_restart() -> None:
    d = directives("glanceseg.service")
    assert d["Type"] == ["notify"]
    assert int(d["WatchdogSec"][0]) > 0
    assert d["Restart"] == ["on-failure"]
    assert d["ExecStart"] == ["/opt/glanceseg/venv/bin/glanceseg serve"]
    assert d["User"] == ["glanceseg"] and d["StateDirectory"] == ["glanceseg"]
    assert "GLANCESEG_DATA_DIR=/var/lib/glanceseg" in d["Environment"]
    assert "GLANCESEG_CONFIG=/etc/glanceseg/glanceseg.toml" in d["Environment"]


def test_app_hardening_leaves_gpu_gpio_and_mdns_reachable() -> None:
    d = directives("glanceseg.service")
    # Any DeviceAllow (ProtectClock implies one) closes the device policy: the GPU would vanish.
    assert d.get("PrivateDevices", ["no"]) == ["no"]
    assert "DeviceAllow" not in d
    assert d.get("ProtectClock", ["no"]) == ["no"]
    assert d.get("DevicePolicy", ["auto"]) == ["auto"]
    assert "IPAddressDeny" not in d and "PrivateNetwork" not in d
    families = set(d["RestrictAddressFamilies"][0].split())
    assert {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"} <= families
    # ...while the rest is locked down.
    assert d["NoNewPrivileges"] == ["yes"] and d["ProtectSystem"] == ["strict"]
    assert d["ProtectHome"] == ["yes"]


def test_kiosk_follows_the_app() -> None:
    d = directives("glanceseg-kiosk.service")
    assert "glanceseg.service" in d["BindsTo"] and "glanceseg.service" in d["PartOf"]
    assert any("glanceseg.service" in v.split() for v in d["After"])
    exec_start = d["ExecStart"][0]
    assert exec_start.startswith("/usr/bin/cage ")
    assert "--kiosk" in exec_start.split() and exec_start.endswith("http://127.0.0.1:8080/")


def test_sync_service_and_timer() -> None:
    assert directives("glanceseg-sync.service")["ExecStart"] == ["/opt/glanceseg/venv/bin/glanceseg sync --once"]
    assert "OnUnitInactiveSec" in directives("glanceseg-sync.timer")


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_in_staged_root(staged_root: Path, unit: str) -> None:
    """systemd's own verifier, with every path a unit names resolved inside the staged root."""
    analyze = need_binary("systemd-analyze")
    proc = subprocess.run([analyze, "verify", f"--root={staged_root}", "--man=no", unit],
                          capture_output=True, text=True, timeout=120, cwd=staged_root)
    assert proc.returncode == 0, proc.stderr
    assert unit not in proc.stderr, proc.stderr


def test_verify_catches_a_missing_executable(staged_root: Path) -> None:
    """The check can fail: without the venv the app unit does not verify."""
    analyze = need_binary("systemd-analyze")
    (staged_root / "opt/glanceseg/venv/bin/glanceseg").unlink()
    proc = subprocess.run([analyze, "verify", f"--root={staged_root}", "--man=no", "glanceseg.service"],
                          capture_output=True, text=True, timeout=120, cwd=staged_root)
    assert proc.returncode != 0
    assert "/opt/glanceseg/venv/bin/glanceseg" in proc.stderr


def test_units_enabled_in_staged_root(staged_root: Path) -> None:
    wants = staged_root / "etc/systemd/system"
    assert (wants / "multi-user.target.wants/glanceseg.service").is_symlink()
    assert (wants / "graphical.target.wants/glanceseg-kiosk.service").is_symlink()
    assert not (wants / "timers.target.wants/glanceseg-sync.timer").exists()


def test_app_unit_exposure_stays_low(staged_root: Path) -> None:
    """systemd's own exposure score (0 safest .. 10) for the app unit: at most 3.0 ("OK")."""
    analyze = need_binary("systemd-analyze")
    proc = subprocess.run([analyze, "security", "--offline=yes", f"--root={staged_root}", "--threshold=30",
                           "--no-pager", "glanceseg.service"],
                          capture_output=True, text=True, timeout=120, cwd=staged_root)
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("systemd-analyze is older than 252 (no --offline)")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "Overall exposure level for glanceseg.service" in proc.stdout
