"""Atomic durable writes and the disk-space guard."""

from __future__ import annotations

import hashlib

import pytest

from appliance.errors import StoreError
from appliance.store import files


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a" / "b" / "file.bin"
    sha = files.atomic_write(target, b"first")
    assert target.read_bytes() == b"first" and sha == hashlib.sha256(b"first").hexdigest()
    files.atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert not list(tmp_path.rglob("*.part"))


def test_sweep_removes_leftover_temporaries(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / ".photo.png.123.part").write_bytes(b"half")
    assert files.sweep_temporaries(tmp_path) == 1
    assert not list(tmp_path.rglob("*.part"))


def test_check_space_refuses_with_a_clear_message(tmp_path):
    free_mb = files.free_bytes(tmp_path) // 2**20
    with pytest.raises(StoreError, match="Not enough free space.*Nothing was stored"):
        files.check_space(tmp_path, 0, free_mb + 1024)
    files.check_space(tmp_path, 1024, 0)


def test_sweep_can_spare_recent_temporaries(tmp_path):
    import os
    import time

    recent, old = tmp_path / ".a.dcm.1.part", tmp_path / ".b.dcm.2.part"
    recent.write_bytes(b"in progress")
    old.write_bytes(b"left by a crash")
    os.utime(old, (time.time() - 700, time.time() - 700))
    assert files.sweep_temporaries(tmp_path, min_age_s=600) == 1
    assert recent.exists() and not old.exists()


def test_check_space_names_the_operation_it_refused(tmp_path):
    free_mb = files.free_bytes(tmp_path) // 2**20
    with pytest.raises(StoreError) as refused:
        files.check_space(tmp_path, 0, free_mb + 1024, ("build the DICOM file for delivery", "It stays queued."))
    assert "to build the DICOM file for delivery:" in str(refused.value) and "It stays queued." in str(refused.value)
    assert "new study" not in str(refused.value)
