"""Fixtures of the store tests (the Orthanc ones are shared with tests/sync)."""

from sync.conftest import clean_orthanc, orthanc  # noqa: F401
