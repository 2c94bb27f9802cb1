"""``collect-logs``: one archive with logs and facts, never a patient image."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Callable, Optional

from firmware_helpers import run_script

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
DICOM = b"\x00" * 128 + b"DICM" + b"\x00" * 32


def collect(staged_root: Path, out: Path) -> dict[str, bytes]:
    """Run ``collect-logs`` into ``out``; return the archive's files by name."""
    proc = run_script("collect-logs", "--root", str(staged_root), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out) as tar:
        return {n: tar.extractfile(n).read() for n in tar.getnames() if tar.getmember(n).isfile()}  # type: ignore[union-attr]


def test_archive_has_logs_and_no_patient_data(staged_root: Path, tmp_path: Path,
                                              fake_glanceseg: Callable[[Optional[str]], None]) -> None:
    fake_glanceseg(json.dumps({"version": "0.1.0", "sync": {"pending": 1}}))
    logs = staged_root / "var/log/glanceseg"
    logs.mkdir(parents=True)
    (logs / "glanceseg.log").write_text("2026-11-27T01:00:00 INFO serve: listening\n")
    (logs / "glanceseg.log.1").write_text("older\n")
    (logs / "disguised.log").write_bytes(PNG)  # an image by content, whatever its name
    (logs / "snapshot.txt").write_bytes(DICOM)
    data = staged_root / "var/lib/glanceseg"
    (data / "photos").mkdir(parents=True)
    (data / "photos/IDRiD_13.jpg").write_bytes(JPEG)
    (data / "glanceseg.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 64)
    (staged_root / "etc/glanceseg/glanceseg.env").write_text(
        "GLANCESEG_DICOMWEB_PASSWORD=hunter2\nexport GLANCESEG_DICOMWEB_TOKEN=hunter2\n"
        "# old: GLANCESEG_DICOMWEB_URL=https://sync:hunter2@pacs.example/dicom-web\n")
    cfg = staged_root / "etc/glanceseg/glanceseg.toml"
    cfg.write_text(cfg.read_text() + '\n[dicomweb]\nurl = "https://pacs.example/dicom-web"\npassword = "hunter2"\n'
                   '# backup = "https://sync:hunter2@pacs2.example/dicom-web"\n')

    out = tmp_path / "support.tar.gz"
    contents = collect(staged_root, out)
    names = list(contents)

    assert "glanceseg-logs/app-logs/glanceseg.log" in names
    assert "glanceseg-logs/app-logs/glanceseg.log.1" in names
    assert "glanceseg-logs/status.json" in names and "glanceseg-logs/healthcheck.txt" in names
    assert not any(n.endswith(("disguised.log", "snapshot.txt", ".jpg", ".db")) for n in names), names
    for name, body in contents.items():
        assert not body.startswith((b"\x89PNG", b"\xff\xd8\xff", b"SQLite format 3")), name
        assert body[128:132] != b"DICM", name
        assert b"hunter2" not in body, name
    assert b"https://pacs.example/dicom-web" in contents["glanceseg-logs/config/glanceseg.toml"]
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def test_secrets_are_redacted_however_the_configuration_writes_them(staged_root: Path, tmp_path: Path,
                                                                    fake_glanceseg: Callable[[Optional[str]], None]) -> None:
    """A commented-out old password, a dotted or quoted TOML key and an inline table all reached
    the vendor verbatim: only a bare ``password = ...`` at the start of a line was redacted."""
    fake_glanceseg(json.dumps({"version": "0.1.0"}))
    (staged_root / "etc/glanceseg/glanceseg.env").write_text(
        "GLANCESEG_DICOMWEB_PASSWORD='secret-1'\n# GLANCESEG_DICOMWEB_PASSWORD=secret-2 (before the rotation)\n")
    cfg = staged_root / "etc/glanceseg/glanceseg.toml"
    cfg.write_text('dicomweb.password = "secret-3"\n' + cfg.read_text() + '\n[dicomweb]\n'
                   'url = "https://pacs.example/dicom-web"\nuser = "sync"\n'
                   '# password = "secret-4"   (the one before the rotation)\n'
                   '"password" = "secret-5"\n'
                   '[sync]\ndicomweb = { url = "https://pacs.example/dicom-web", password = "secret-6" }\n')

    contents = collect(staged_root, tmp_path / "support.tar.gz")
    toml, env = contents["glanceseg-logs/config/glanceseg.toml"], contents["glanceseg-logs/config/glanceseg.env"]
    assert b"secret-" not in toml + env, (toml + env).decode()
    assert b'url = "https://pacs.example/dicom-web"' in toml and b'user = "sync"' in toml
    assert toml.count(b"<redacted>") == 4 and env.count(b"<redacted>") == 2


def test_url_credentials_are_redacted_in_every_log_collected(staged_root: Path, tmp_path: Path,
                                                              fake_glanceseg: Callable[[Optional[str]], None]) -> None:
    """Only the configuration's URLs lost their user:password@; a log line quoting an update
    server's URL (older releases logged it in full) went to the vendor as it was."""
    fake_glanceseg(json.dumps({"version": "0.1.0"}))
    logs = staged_root / "var/log/glanceseg"
    logs.mkdir(parents=True)
    (logs / "glanceseg.log").write_text(
        "2026-11-27T01:00:00 WARNING model update check failed: Cannot read the update index from "
        "https://sync:hunter2@updates.example/: 401 Client Error\n2026-11-27T01:00:01 INFO ok\n")
    contents = collect(staged_root, tmp_path / "support.tar.gz")
    names, log = list(contents), contents["glanceseg-logs/app-logs/glanceseg.log"]
    assert log == (b"2026-11-27T01:00:00 WARNING model update check failed: Cannot read the update index from "
                   b"https://<redacted>@updates.example/: 401 Client Error\n2026-11-27T01:00:01 INFO ok\n")
    assert not any(n.endswith(".redacting") for n in names)


def test_an_archive_written_over_an_older_file_is_owner_only(staged_root: Path, tmp_path: Path,
                                                             fake_glanceseg: Callable[[Optional[str]], None]) -> None:
    """tar truncates an existing --out file and keeps its mode: a bundle written over a 0644
    file was readable by every user."""
    fake_glanceseg(json.dumps({"version": "0.1.0"}))
    out = tmp_path / "support.tar.gz"
    out.write_bytes(b"an older bundle")
    out.chmod(0o644)
    assert "glanceseg-logs/status.json" in collect(staged_root, out)
    assert oct(out.stat().st_mode & 0o777) == "0o600"
