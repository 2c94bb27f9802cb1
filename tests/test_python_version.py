"""The code runs on the device's Python 3.10 (JetPack 6), while this machine and CI run 3.11.

Nothing here runs the suite under 3.10, so the check is static: vermin finds syntax, modules
and library calls newer than 3.10 (``except*``, ``tomllib``, ``typing.Self``, ...), which
3.11 would accept silently until the first start on a Jetson.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _vermin(*paths: Path) -> subprocess.CompletedProcess:
    vermin = Path(sys.executable).with_name("vermin")
    return subprocess.run([str(vermin), "--no-tips", "-t=3.10-", "--violations", "-q", *map(str, paths)],
                          capture_output=True, text=True, timeout=300)


def test_the_appliance_its_scripts_and_model_tools_need_no_python_newer_than_3_10():
    result = _vermin(ROOT / "appliance", ROOT / "models", ROOT / "firmware_scripts", ROOT / "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_sees_python_3_11_features(tmp_path):
    (tmp_path / "newer.py").write_text("import tomllib\ntry:\n    pass\nexcept* ValueError:\n    pass\n")
    result = _vermin(tmp_path)
    assert result.returncode != 0 and "tomllib" in result.stdout
