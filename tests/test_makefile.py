"""The Makefile's targets run as the README says: every glanceseg command and pytest marker in it is valid.

Nothing else runs ``make eval`` or ``make test-fast`` (minutes, and the data set), so a renamed
option or marker would only show when a developer types the command.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
MAKEFILE = (ROOT / "Makefile").read_text()
VARIABLES = {"HOST": "127.0.0.1", "PORT": "8080"}


def _recipes(program: str) -> list[str]:
    """Recipe lines that run ``$(BIN)/<program>``, with the Makefile's variables filled in."""
    lines = [line.strip() for line in MAKEFILE.splitlines() if line.startswith("\t")]
    found = [line.split(f"/{program}", 1)[1] for line in lines if f"$(BIN)/{program} " in line]
    return [re.sub(r"\$\((\w+)\)", lambda m: VARIABLES[m.group(1)], rest) for rest in found]


@pytest.mark.parametrize("args", _recipes("glanceseg"))
def test_every_glanceseg_command_of_the_makefile_parses(args):
    build_parser().parse_args(shlex.split(args))  # argparse exits 2 on an unknown option or choice


def test_the_makefile_runs_the_eval_and_serve_commands_the_readme_names():
    commands = [shlex.split(args)[0] for args in _recipes("glanceseg")]
    assert {"models", "serve", "eval", "bench"} <= set(commands)


@pytest.mark.parametrize("args", _recipes("pytest"))
def test_every_pytest_marker_expression_of_the_makefile_is_accepted(args):
    # pytest refuses an unregistered marker in -m with exit status 4 under --strict-markers.
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             *shlex.split(args), "tests/models"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode in (0, 5), result.stdout + result.stderr


def test_make_test_fast_leaves_out_the_model_build_tests():
    (args,) = [a for a in _recipes("pytest") if "-m" in a]
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             *shlex.split(args), "tests/models/test_build.py"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert "deselected" in result.stdout and "test_build.py::" not in result.stdout, result.stdout + result.stderr
