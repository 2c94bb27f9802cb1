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
