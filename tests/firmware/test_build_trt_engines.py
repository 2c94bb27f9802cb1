"""build-trt-engines runs the appliance's own warm-up and refuses to stamp a cache TensorRT did not fill."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from firmware_helpers import REPO, run_script


def _staged_root(tmp_path: Path) -> Path:
    """A staged tree whose venv is this test run's environment (the CPU onnxruntime build)."""
    root = tmp_path / "root"
    prefix = root / "opt/glanceseg"
    prefix.mkdir(parents=True)
    (prefix / "venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (prefix / "models").mkdir()
    (prefix / "models/manifest.json").write_bytes((REPO / "models/manifest.json").read_bytes())
    (root / "etc/glanceseg").mkdir(parents=True)
    (root / "etc/glanceseg/glanceseg.toml").write_text("[model]\nvariant = \"auto\"\n")
    return root


def test_without_tensorrt_the_warmup_runs_and_the_cache_is_not_stamped(tmp_path: Path) -> None:
    root, cache = _staged_root(tmp_path), tmp_path / "trt"
    proc = run_script("build-trt-engines", "--root", str(root), "--cache", str(cache))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "models warmup" in proc.stdout
    report = json.loads(next(line for line in proc.stdout.splitlines() if line.strip().startswith("{")))
    # The appliance's own sessions ran: the CPU build leads with the CPU provider and auto picks int8.
    assert report["providers"][0] == "CPUExecutionProvider" and report["variant"] == "int8"
    assert "did not run on TensorRT" in proc.stderr
    assert not (cache / "glanceseg-cache.stamp").exists()


def test_the_env_files_secrets_reach_the_app_but_never_its_command_line(tmp_path: Path) -> None:
    """glanceseg.env's settings went onto the app's command line (``env KEY=VALUE ...``), which
    every local user reads with ``ps`` while the warm-up runs for minutes, and which the script
    printed: the DICOMweb password on the technician's screen and in any captured output."""
    import subprocess

    from firmware_helpers import SCRIPTS_DIR

    root = _staged_root(tmp_path)
    (root / "etc/glanceseg/glanceseg.env").write_text(
        "GLANCESEG_DICOMWEB_PASSWORD='hunter2'\nexport GLANCESEG_GAZE_SOURCE=neon\n")
    proc = run_script("build-trt-engines", "--root", str(root), "--cache", str(tmp_path / "trt"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "models warmup" in proc.stdout
    assert "hunter2" not in proc.stdout + proc.stderr

    # The command line lib.sh builds for the app, and what the app then finds in its environment.
    script = (f'. "{SCRIPTS_DIR}/lib.sh"; GS_ROOT="{root}"; gs_paths; app_env; '
              'printf "%s\\n" "${APP_ENV[*]}"; "${APP_ENV[@]}" sh -c \'echo "$GLANCESEG_DICOMWEB_PASSWORD $GLANCESEG_GAZE_SOURCE"\'')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "hunter2" not in out[0] and f"GLANCESEG_DATA_DIR={root}/var/lib/glanceseg" in out[0]
    assert out[1] == "hunter2 neon"
