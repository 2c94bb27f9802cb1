"""Cross-area fixtures: a configuration on a temporary data folder and the shared data set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent
IDRID_DIR = REPO.parent / "shared" / "data" / "idrid-ma"
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip a test whose service or binary is missing, or fail when CI requires it."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The default configuration with its data folder in a temporary directory."""
    return load_config(environ={}).replace(data={"dir": tmp_path / "data"})


@pytest.fixture(scope="session")
def idrid_dir() -> Path:
    """The shared IDRiD MA data set (skipped, or failed in CI, when absent)."""
    if not (IDRID_DIR / "index.csv").exists():
        skip_or_fail(f"the shared data set is not at {IDRID_DIR}")
    return IDRID_DIR
