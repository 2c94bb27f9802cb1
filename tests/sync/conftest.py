"""Fixtures of the sync tests: a real Orthanc, a store on a temp data folder, synthetic studies."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sync.orthanc import OrthancServer, available  # noqa: E402
from store.helpers import make_config, make_study_inputs  # noqa: E402,F401


def _missing(reason: str) -> None:
    """Skip, or fail where CI installs everything (REQUIRE_SERVICES=1)."""
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """David Clunie's DICOM IOD validator (Debian package dicom3tools)."""
    path = shutil.which("dciodvfy")
    if path is None:
        _missing("dciodvfy (Debian package dicom3tools) is not installed")
    return str(path)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A running Orthanc (DICOMweb, basic auth, loopback only) for the whole session."""
    reason = available()
    if reason:
        _missing(reason)
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clean_orthanc(orthanc):
    """The session's Orthanc, emptied (and restarted if a test left it stopped)."""
    if orthanc.proc is None or orthanc.proc.poll() is not None:
        orthanc.start()
    orthanc.clear()
    yield orthanc
    if orthanc.proc is None or orthanc.proc.poll() is not None:
        orthanc.start()
