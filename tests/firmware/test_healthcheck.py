"""``healthcheck`` against a staged root and a ``glanceseg status --json`` stand-in."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from firmware_helpers import run_script


def status(**overrides: Any) -> dict:
    """A healthy ``glanceseg status --json`` answer, with sections replaced by ``overrides``."""
    base: dict[str, Any] = {
        "version": "0.1.0",
        "model": {"name": "tiny", "sha256": "", "providers": ["TensorrtExecutionProvider", "CPUExecutionProvider"]},
        "tracker": {"source": "neon", "connected": True, "last_sample_age_s": 0.01},
        "sync": {"pending": 0, "failed": 0, "last_success_unix": time.time() - 60,
                 "oldest_pending_unix": None, "last_error": None},
        "store": {"min_free_mb": 1, "undelivered_studies": 0},
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value}
    return base


@pytest.fixture
def check(staged_root: Path, fake_glanceseg: Callable[[Optional[str]], None]) -> Callable[..., tuple[int, dict]]:
    manifest_sha = (staged_root / "opt/glanceseg/share/manifest.sha256").read_text().strip()

    def run(answer: Optional[dict], *args: str) -> tuple[int, dict]:
        if answer is not None and answer["model"]["sha256"] == "":
            answer["model"]["sha256"] = manifest_sha
        fake_glanceseg(None if answer is None else json.dumps(answer))
        proc = run_script("healthcheck", "--root", str(staged_root), "--json", *args)
        report = json.loads(proc.stdout)
        assert report["exit"] == proc.returncode
        return proc.returncode, {c["check"]: c["level"] for c in report["checks"]}

    return run


def test_healthy_station_exits_0(check: Callable) -> None:
    code, levels = check(status())
    assert code == 0, levels
    assert set(levels) == {"secrets", "model", "runtime", "tracker", "disk", "sync"}


def test_altered_model_file_is_critical(check: Callable, staged_root: Path) -> None:
    (staged_root / "opt/glanceseg/models/tiny.onnx").write_bytes(b"tampered")
    code, levels = check(status())
    assert code == 2 and levels["model"] == "CRITICAL"


def test_altered_manifest_is_critical(check: Callable, staged_root: Path) -> None:
    manifest = staged_root / "opt/glanceseg/models/manifest.json"
    manifest.write_text(manifest.read_text().replace('"tiny"', '"other"'))
    code, levels = check(status())
    assert code == 2 and levels["model"] == "CRITICAL"


def test_app_running_an_older_model_warns(check: Callable) -> None:
    code, levels = check(status(model={"sha256": "0" * 64}))
    assert code == 1 and levels["model"] == "WARNING"


def test_a_model_update_the_app_runs_is_ok_and_one_it_does_not_warns(check: Callable) -> None:
    # A signed update in <data_dir>/models/current: what a restart loads is the update, not /opt's.
    update = "ab" * 32
    code, levels = check(status(model={"sha256": update, "installed_sha256": update}))
    assert code == 0 and levels["model"] == "OK"
    code, levels = check(status(model={"sha256": "0" * 64, "installed_sha256": update}))
    assert code == 1 and levels["model"] == "WARNING"


def test_disconnected_tracker_warns_pointer_does_not(check: Callable) -> None:
    assert check(status(tracker={"connected": False}))[1]["tracker"] == "WARNING"
    assert check(status(tracker={"source": "pointer", "connected": False}))[1]["tracker"] == "OK"
    # Without the running app nobody knows (null): unknown, not a warning raised for ever.
    assert check(status(tracker={"connected": None}))[1]["tracker"] == "UNKNOWN"


def test_sync_age_thresholds(check: Callable) -> None:
    hours = 3600
    fresh = status(sync={"pending": 3, "oldest_pending_unix": time.time() - 2 * hours})
    assert check(fresh)[1]["sync"] == "OK"
    day = status(sync={"pending": 3, "oldest_pending_unix": time.time() - 30 * hours})
    assert check(day) == (1, check(day)[1]) and check(day)[1]["sync"] == "WARNING"
    week = status(sync={"pending": 3, "oldest_pending_unix": time.time() - 200 * hours})
    assert check(week)[0] == 2
    assert check(week, "--sync-crit-hours", "1000")[1]["sync"] == "WARNING"


def test_refused_items_are_critical(check: Callable) -> None:
    code, levels = check(status(sync={"failed": 1, "last_error": "409 Conflict"}))
    assert code == 2 and levels["sync"] == "CRITICAL"


def test_low_disk_is_critical(check: Callable) -> None:
    code, levels = check(status(store={"min_free_mb": 10**9}))
    assert code == 2 and levels["disk"] == "CRITICAL"


def test_cpu_fallback_on_a_jetson_warns(check: Callable, staged_root: Path) -> None:
    cpu = status(model={"providers": ["CPUExecutionProvider"]})
    assert check(cpu)[1]["runtime"] == "OK"  # not a Jetson: the CPU is the runtime
    (staged_root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0\n")
    assert check(cpu)[1]["runtime"] == "WARNING"


def test_tensorrt_without_engines_for_the_active_model_warns(check: Callable) -> None:
    assert check(status(model={"trt_engines": 0}))[1]["runtime"] == "WARNING"
    assert check(status(model={"trt_engines": 2}))[1]["runtime"] == "OK"
    cpu = status(model={"providers": ["CPUExecutionProvider"], "trt_engines": None})
    assert check(cpu)[1]["runtime"] == "OK"  # TensorRT does not run the model: nothing to build


def test_no_app_status_is_unknown(check: Callable) -> None:
    code, levels = check(None)
    assert code == 3
    assert levels["sync"] == "UNKNOWN" and levels["model"] == "UNKNOWN"


def test_the_app_runs_with_the_environment_its_units_give_it(staged_root: Path, fake_glanceseg: Callable) -> None:
    # The units read glanceseg.env and put an installed software update first on the path; a
    # script that did not would check another configuration, or run old code against a database
    # the new release migrated. lib.sh's own GLANCESEG_BIN must not reach the app (an unknown key).
    fake_glanceseg(json.dumps(status()))
    binary = staged_root / "opt/glanceseg/venv/bin/glanceseg"
    seen = staged_root / "app-env.txt"
    binary.write_text(binary.read_text().replace("cat ", f"env > '{seen}'\ncat ", 1))
    (staged_root / "etc/glanceseg/glanceseg.env").write_text(
        '# the units read this file\nGLANCESEG_GAZE_SOURCE="neon"\nexport GLANCESEG_MODEL_FP16=false\n'
        "GLANCESEG_DATA_DIR=/var/lib/glanceseg\n")
    site = staged_root / "var/lib/glanceseg/software/current/_site"
    site.mkdir(parents=True)
    proc = run_script("healthcheck", "--root", str(staged_root), "--json", env={"GLANCESEG_BIN": str(binary)})
    assert json.loads(proc.stdout)["exit"] == proc.returncode
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert env["GLANCESEG_GAZE_SOURCE"] == "neon" and env["GLANCESEG_MODEL_FP16"] == "false"
    assert env["GLANCESEG_DATA_DIR"] == str(staged_root / "var/lib/glanceseg")  # the staged root's, not the file's
    assert env["PYTHONPATH"] == str(site) and "GLANCESEG_BIN" not in env


def test_a_secret_readable_by_every_user_is_a_warning(check: Callable, staged_root: Path) -> None:
    """The docs ask for glanceseg.env as root:glanceseg 0640, but `echo ... >` as root makes it
    0644: the DICOMweb password readable by every local account, and nothing said so."""
    etc = staged_root / "etc/glanceseg"
    env, key, toml = etc / "glanceseg.env", etc / "tls/ui.pem", etc / "glanceseg.toml"
    env.write_text("GLANCESEG_DICOMWEB_PASSWORD=hunter2\n")
    key.parent.mkdir()
    key.write_text("-----BEGIN PRIVATE KEY-----\n...\n")
    (etc / "updates.pub").write_text("-----BEGIN PUBLIC KEY-----\n")
    toml.write_text(toml.read_text() + '\n[dicomweb]\npassword = ""\n')  # no secret in it
    for path in (env, key, toml, etc / "updates.pub"):
        path.chmod(0o640)
    code, levels = check(status())
    assert code == 0 and levels["secrets"] == "OK", levels
    for path in (env, key, toml, etc / "updates.pub"):
        path.chmod(0o644)
    code, levels = check(status())
    assert code == 1 and levels["secrets"] == "WARNING", levels
    proc = run_script("healthcheck", "--root", str(staged_root))
    line = next(line for line in proc.stdout.splitlines() if " secrets " in line)
    assert "/etc/glanceseg/glanceseg.env" in line and "/etc/glanceseg/tls/ui.pem" in line
    assert "glanceseg.toml" not in line and "updates.pub" not in line and "hunter2" not in proc.stdout
