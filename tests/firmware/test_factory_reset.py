"""``factory-reset``: refuses while undelivered data exists unless --force is given twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import pytest

from firmware_helpers import SCRIPTS_DIR, run_script


@pytest.fixture
def station(staged_root: Path) -> Path:
    """A staged station with a database, a photograph, a kiosk profile and a changed config."""
    data = staged_root / "var/lib/glanceseg"
    (data / "photos").mkdir(parents=True)
    (data / "glanceseg.db").write_bytes(b"SQLite format 3\x00")
    (data / "photos/a.png").write_bytes(b"\x89PNG")
    kiosk = staged_root / "var/lib/glanceseg-kiosk/chromium"
    kiosk.mkdir(parents=True)
    (kiosk / "Cookies").write_text("session")
    (staged_root / "etc/glanceseg/glanceseg.toml").write_text('[dicomweb]\nurl = "https://pacs.example"\n')
    (staged_root / "etc/glanceseg/glanceseg.env").write_text("GLANCESEG_DICOMWEB_PASSWORD=x\n")
    return staged_root


def reset(root: Path, *args: str):
    return run_script("factory-reset", "--root", str(root), *args)


def intact(root: Path) -> bool:
    return (root / "var/lib/glanceseg/glanceseg.db").exists() and (root / "var/lib/glanceseg/photos/a.png").exists()


def test_refuses_with_undelivered_data_unless_forced_twice(
        station: Path, fake_glanceseg: Callable[[Optional[str]], None]) -> None:
    fake_glanceseg(json.dumps({"version": "0.1.0", "sync": {"pending": 2}}))
    proc = reset(station, "--yes")
    assert proc.returncode == 3 and "2 outbox item(s)" in proc.stderr
    assert intact(station)
    proc = reset(station, "--yes", "--force")
    assert proc.returncode == 3 and "--force twice" in proc.stderr
    assert intact(station)

    proc = reset(station, "--yes", "--force", "--force")
    assert proc.returncode == 0, proc.stderr
    assert (station / "var/lib/glanceseg").is_dir()
    assert list((station / "var/lib/glanceseg").iterdir()) == []
    assert list((station / "var/lib/glanceseg-kiosk").iterdir()) == []
    assert not (station / "etc/glanceseg/glanceseg.env").exists()
    assert (station / "etc/glanceseg/glanceseg.toml").read_text() == \
        (SCRIPTS_DIR / "glanceseg.toml.default").read_text()


def test_unknown_outbox_counts_as_undelivered(station: Path, fake_glanceseg: Callable[[Optional[str]], None]) -> None:
    fake_glanceseg(None)  # `glanceseg status --json` fails
    proc = reset(station, "--yes", "--force")
    assert proc.returncode == 3 and "cannot be read" in proc.stderr
    assert intact(station)


def test_everything_delivered_resets_with_yes(station: Path, fake_glanceseg: Callable[[Optional[str]], None]) -> None:
    fake_glanceseg(json.dumps({"version": "0.1.0", "sync": {"pending": 0}}))
    proc = reset(station, "--keep-config")
    assert proc.returncode == 1 and "--yes" in proc.stderr  # not interactive, not confirmed
    assert intact(station)
    proc = reset(station, "--yes", "--keep-config")
    assert proc.returncode == 0, proc.stderr
    assert not intact(station)
    assert "pacs.example" in (station / "etc/glanceseg/glanceseg.toml").read_text()


def test_dry_run_with_undelivered_data_erases_nothing(
        station: Path, fake_glanceseg: Callable[[Optional[str]], None]) -> None:
    fake_glanceseg(json.dumps({"version": "0.1.0", "sync": {"pending": 5}}))
    proc = reset(station, "--dry-run", "--force", "--force")
    assert proc.returncode == 0
    assert "[dry-run] find" in proc.stdout
    assert intact(station)


@pytest.mark.parametrize("in_config", [True, False])
def test_the_clinics_update_signing_key_stays_trusted(station: Path, in_config: bool,
                                                      fake_glanceseg: Callable[[Optional[str]], None]) -> None:
    """The restored default trusted the development key again, so the station refused every
    bundle the clinic signed. The key set in the config, or provision's updates.pub, is kept."""
    fake_glanceseg(json.dumps({"version": "0.1.0", "sync": {"pending": 0}}))
    etc = station / "etc/glanceseg"
    (etc / "updates.pub").write_text("-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n")
    key = "/etc/glanceseg/clinic-updates.pub" if in_config else "/etc/glanceseg/updates.pub"
    if in_config:
        (etc / "glanceseg.toml").write_text(f'[dicomweb]\nurl = "https://pacs.example"\n\n[updates]\n'
                                            f'public_key = "{key}"  # the clinic\'s\n')
    proc = reset(station, "--yes")
    assert proc.returncode == 0, proc.stderr
    config = (etc / "glanceseg.toml").read_text()
    assert "pacs.example" not in config
    assert config.startswith((SCRIPTS_DIR / "glanceseg.toml.default").read_text())
    assert f'[updates]\npublic_key = "{key}"\n' in config
    assert (etc / "updates.pub").exists()


def test_the_clinics_keys_and_the_support_bundles_go_with_a_reset(
        station: Path, fake_glanceseg: Callable[[Optional[str]], None]) -> None:
    """Only glanceseg.env was removed from /etc/glanceseg: the UI's TLS private key, the
    DICOMweb client key and CA bundle stayed on a station handed on, as did the support bundles
    collect-logs leaves in /var/tmp (this station's journal and settings)."""
    fake_glanceseg(json.dumps({"version": "0.1.0", "sync": {"pending": 0}}))
    etc = station / "etc/glanceseg"
    (etc / "updates.pub").write_text("-----BEGIN PUBLIC KEY-----\n")
    (etc / "tls").mkdir()
    secrets = [etc / "tls/ui.key", etc / "tls/ui.crt", etc / "dicomweb-client.key", etc / "clinic-ca.pem"]
    for path in secrets:
        path.write_text("-----BEGIN PRIVATE KEY-----\n")
    bundle = station / "var/tmp/glanceseg-logs-station-20261127T010000Z.tar.gz"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_bytes(b"\x1f\x8b")

    proc = reset(station, "--yes", "--keep-config")
    assert proc.returncode == 0, proc.stderr
    assert all(p.exists() for p in secrets)  # --keep-config keeps the clinic's settings
    assert not bundle.exists()

    proc = reset(station, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in etc.iterdir()) == ["glanceseg.toml", "updates.pub"]
