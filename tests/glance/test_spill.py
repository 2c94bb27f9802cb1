"""Embeddings kept on disk: whole files or none, bounded, deleted with their photograph or process."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from appliance.glance.spill import EmbeddingSpill, remove_stale


def _emb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 256, 64, 64)).astype(np.float16)


def _files(spill: EmbeddingSpill) -> list[str]:
    return sorted(p.name for p in spill.folder.rglob("*") if p.is_file())


def test_embeddings_come_back_exactly_and_the_oldest_file_goes_first(tmp_path):
    spill = EmbeddingSpill(tmp_path, capacity=2)
    a, b, c = _emb(0), _emb(1), _emb(2)
    spill.put(("img", (0, 0)), a)
    spill.put(("img", (0, 1)), b)
    got = spill.get(("img", (0, 0)))
    assert got.dtype == np.float16 and np.array_equal(got, a)  # bit for bit
    spill.put(("img", (0, 2)), c)  # (0, 1) is now the least recently used
    assert ("img", (0, 1)) not in spill and spill.get(("img", (0, 1))) is None
    assert _files(spill) == ["0_0.npy", "0_2.npy"] and len(spill) == 2
    assert spill.nbytes == sum(p.stat().st_size for p in spill.folder.rglob("*.npy"))
    spill.put(("other", (0, 0)), a)
    spill.forget("img")
    assert _files(spill) == ["0_0.npy"] and ("other", (0, 0)) in spill
    spill.close()
    assert not spill.folder.exists()


def test_a_damaged_file_is_refused_and_dropped(tmp_path, caplog):
    spill = EmbeddingSpill(tmp_path, capacity=4)
    spill.put(("img", (1, 1)), _emb(3))
    path = next(spill.folder.rglob("*.npy"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a write cut short
    with caplog.at_level(logging.WARNING, logger="appliance.glance.spill"):
        assert spill.get(("img", (1, 1))) is None
    assert "damaged" in caplog.text and not path.exists() and ("img", (1, 1)) not in spill


def test_folders_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"pid-{int(child.stdout)}-a1b2"
    live = tmp_path / f"pid-{os.getppid()}-c3d4"
    for folder in (dead, live):
        (folder / "img").mkdir(parents=True)
        (folder / "img" / "0_0.npy").write_bytes(b"x")
    spill = EmbeddingSpill(tmp_path, capacity=1)  # what a restarted appliance does
    assert not dead.exists() and live.exists() and spill.folder.is_dir()
    second = EmbeddingSpill(tmp_path, capacity=1)  # another engine in the same process
    assert second.folder != spill.folder and spill.folder.is_dir()
    assert remove_stale(tmp_path) == 0


def test_the_disk_space_reserved_for_patient_data_is_never_used(tmp_path):
    spill = EmbeddingSpill(tmp_path, capacity=4, min_free_bytes=shutil.disk_usage(tmp_path).free)
    with pytest.raises(OSError, match="reserved for patient data"):
        spill.put(("img", (0, 0)), _emb(4))
    assert not _files(spill) and ("img", (0, 0)) not in spill


def test_capacity_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        EmbeddingSpill(tmp_path, capacity=0)
