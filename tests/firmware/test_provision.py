"""``provision --root``: what it installs into a staged root, and that a second run changes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from appliance.config import load_config
from firmware_helpers import SCRIPTS_DIR, run_script, tree_state


def test_second_run_changes_nothing(staged_root: Path, models_src: Path) -> None:
    before = tree_state(staged_root)
    proc = run_script("provision", "--root", str(staged_root), "--models", str(models_src), check=True)
    assert "nothing to change" in proc.stdout
    assert "    + " not in proc.stdout  # no command was run
    assert tree_state(staged_root) == before


def test_rerun_repairs_what_was_changed(staged_root: Path, models_src: Path) -> None:
    """Idempotent, not inert: a damaged file is put back, and only that."""
    unit = staged_root / "etc/systemd/system/glanceseg.service"
    unit.write_text("[Service]\nExecStart=/bin/false\n")
    proc = run_script("provision", "--root", str(staged_root), "--models", str(models_src), check=True)
    assert proc.stdout.count("    + ") == 1
    assert unit.read_text() == (SCRIPTS_DIR.parent / "systemd/glanceseg.service").read_text()


def test_installed_layout(staged_root: Path, models_src: Path) -> None:
    r = staged_root
    assert (r / "opt/glanceseg/venv/bin/glanceseg").stat().st_mode & 0o111
    assert (r / "opt/glanceseg/bin/glanceseg-kiosk-browser").stat().st_mode & 0o111
    for name in ("provision", "healthcheck", "collect-logs", "factory-reset", "build-trt-engines", "lib.sh"):
        assert (r / "opt/glanceseg/firmware_scripts" / name).is_file()
    assert (r / "etc/udev/rules.d/99-glanceseg-gpio.rules").is_file()
    assert (r / "etc/pam.d/glanceseg-kiosk").is_file()
    for policy in ("etc/chromium/policies/managed", "etc/chromium-browser/policies/managed"):
        # One Chromium profile serves every clinician: no saved PINs, no form history.
        managed = json.loads((r / policy / "glanceseg.json").read_text())
        assert managed["PasswordManagerEnabled"] is False and managed["AutofillAddressEnabled"] is False
    assert (r / "opt/glanceseg/models/tiny.onnx").read_bytes() == (models_src / "tiny.onnx").read_bytes()
    recorded = (r / "opt/glanceseg/share/manifest.sha256").read_text().strip()
    assert recorded == hashlib.sha256((models_src / "manifest.json").read_bytes()).hexdigest()
    assert oct((r / "etc/glanceseg/glanceseg.toml").stat().st_mode & 0o777) == "0o640"


def test_users_and_groups_in_staged_root(staged_root: Path) -> None:
    passwd = (staged_root / "etc/passwd").read_text()
    group = {line.split(":")[0]: line.split(":")[3] for line in (staged_root / "etc/group").read_text().splitlines()}
    assert "glanceseg:" in passwd and "glanceseg-kiosk:" in passwd
    assert "glanceseg" in group["gpio"].split(",")
    assert "glanceseg" in group["video"].split(",")
    assert "glanceseg-kiosk" in group["input"].split(",")


def test_default_config_is_valid_and_points_at_the_install(staged_root: Path) -> None:
    config = load_config(staged_root / "etc/glanceseg/glanceseg.toml", environ={})
    assert config.model.dir == Path("/opt/glanceseg/models")
    assert config.model.trt_cache_dir == Path("/var/cache/glanceseg/trt")
    assert config.model.fp16 is True
    assert config.ui.port == 8080


def test_existing_config_is_never_overwritten(staged_root: Path, models_src: Path) -> None:
    cfg = staged_root / "etc/glanceseg/glanceseg.toml"
    cfg.write_text("[ui]\nport = 9090\n")
    run_script("provision", "--root", str(staged_root), "--models", str(models_src), check=True)
    assert cfg.read_text() == "[ui]\nport = 9090\n"


def test_options_switch_units(staged_root: Path, models_src: Path) -> None:
    wants = staged_root / "etc/systemd/system"
    run_script("provision", "--root", str(staged_root), "--models", str(models_src), "--sync-timer", "--no-kiosk",
               check=True)
    assert (wants / "timers.target.wants/glanceseg-sync.timer").is_symlink()
    assert not (wants / "graphical.target.wants/glanceseg-kiosk.service").exists()


def test_update_key_is_installed_and_configured(tmp_path: Path, models_src: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from firmware_helpers import need_binary, seed_base_system

    need_binary("systemctl")
    need_binary("systemd-sysusers")
    pem = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key = tmp_path / "prod.pub"
    key.write_bytes(pem)
    root = tmp_path / "root"
    root.mkdir()
    seed_base_system(root)
    proc = run_script("provision", "--root", str(root), "--models", str(models_src), "--update-key", str(key),
                      check=True)
    assert "DEVELOPMENT" not in proc.stderr
    assert (root / "etc/glanceseg/updates.pub").read_bytes() == pem
    config = load_config(root / "etc/glanceseg/glanceseg.toml", environ={})
    assert config.updates.public_key == "/etc/glanceseg/updates.pub"
    before = tree_state(root)
    run_script("provision", "--root", str(root), "--models", str(models_src), "--update-key", str(key), check=True)
    assert tree_state(root) == before


def test_update_key_is_set_in_an_existing_config(staged_root: Path, models_src: Path, tmp_path: Path) -> None:
    """Re-provisioning with --update-key over an existing config must make it trust that key,
    not leave the development default in force behind a warning."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = tmp_path / "prod.pub"
    key.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    cfg = staged_root / "etc/glanceseg/glanceseg.toml"
    for text in ("[ui]\nport = 9090\n",
                 "[updates]\npublic_key = \"/opt/dev.pub\"\nserver_url = \"https://u.example/\"\n[ui]\nport = 9090\n",
                 "[updates]\nserver_url = \"https://u.example/\"\n"):
        cfg.write_text(text)
        run_script("provision", "--root", str(staged_root), "--models", str(models_src), "--update-key", str(key),
                   check=True)
        config = load_config(cfg, environ={})
        assert config.updates.public_key == "/etc/glanceseg/updates.pub", cfg.read_text()
        assert "port" not in text or config.ui.port == 9090
        assert "server_url" not in text or config.updates.server_url == "https://u.example/"
        before = cfg.read_text()
        run_script("provision", "--root", str(staged_root), "--models", str(models_src), "--update-key", str(key),
                   check=True)
        assert cfg.read_text() == before


def test_without_update_key_provision_warns(staged_root: Path, models_src: Path) -> None:
    (staged_root / "etc/glanceseg/glanceseg.toml").unlink()
    proc = run_script("provision", "--root", str(staged_root), "--models", str(models_src), check=True)
    assert "DEVELOPMENT update-signing key" in proc.stderr
