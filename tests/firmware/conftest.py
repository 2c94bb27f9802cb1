"""Fixtures of the firmware tests: a staged root provisioned by ``firmware_scripts/provision``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable, Optional

import pytest

from firmware_helpers import HOST_UNIT_DIR, need_binary, run_script, seed_base_system


@pytest.fixture(scope="session")
def models_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny stand-in for ``models/``: a manifest naming one file with its sha256."""
    src = tmp_path_factory.mktemp("models-src")
    onnx = b"not really onnx, but bytes with a sha256"
    (src / "tiny.onnx").write_bytes(onnx)
    manifest = {"name": "tiny", "files": [{"role": "encoder", "file": "tiny.onnx", "bytes": len(onnx),
                                           "sha256": hashlib.sha256(onnx).hexdigest()}]}
    (src / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return src


@pytest.fixture(scope="session")
def provisioned_root(tmp_path_factory: pytest.TempPathFactory, models_src: Path) -> Path:
    """A root provisioned once per session by ``provision --root`` on a seeded base system."""
    need_binary("systemctl")
    need_binary("systemd-sysusers")
    if not HOST_UNIT_DIR.is_dir():
        pytest.skip(f"{HOST_UNIT_DIR} is missing: systemd's units cannot seed the staged root")
    root = tmp_path_factory.mktemp("provisioned") / "root"
    root.mkdir()
    seed_base_system(root)
    run_script("provision", "--root", str(root), "--models", str(models_src), check=True)
    return root


@pytest.fixture
def staged_root(tmp_path: Path, provisioned_root: Path) -> Path:
    """A private copy of the provisioned root (links, modes and times kept) for one test."""
    root = tmp_path / "root"
    shutil.copytree(provisioned_root, root, symlinks=True)
    return root


@pytest.fixture
def fake_glanceseg(staged_root: Path) -> Callable[[Optional[str]], None]:
    """Replace the staged ``glanceseg`` stub by one whose ``status --json`` prints given JSON."""
    binary = staged_root / "opt/glanceseg/venv/bin/glanceseg"

    def install(status_json: Optional[str]) -> None:
        if status_json is None:
            binary.write_text("#!/bin/sh\necho 'database locked' >&2\nexit 1\n")
        else:
            (staged_root / "status.json").write_text(status_json)
            binary.write_text(
                "#!/bin/sh\n"
                '[ "$1 $2" = "status --json" ] || exit 64\n'
                f"cat '{staged_root / 'status.json'}'\n"
            )
        binary.chmod(0o755)

    return install
