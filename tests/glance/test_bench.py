"""``glanceseg bench``'s memory child: the shipped path's peak RSS, pre-encode time and cache size."""

from __future__ import annotations

from pathlib import Path

import cv2

from appliance.glance.bench import child_memory_figures

DEMO = Path(__file__).resolve().parents[2] / "appliance" / "demo" / "IDRiD_03.jpg"


def test_memory_child_reports_every_stage(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GLANCESEG_MODEL_CACHE_TILES", "1")  # one tile in RAM, the rest on disk
    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), cv2.imread(str(DEMO))[1000:1448, 1250:1698])  # 448 px: a 2x2 tile grid
    figures = child_memory_figures(None, crop)
    assert set(figures) == {"peak_rss_mb", "peak_rss_mb_scan", "peak_rss_mb_preencode", "preencode_s",
                            "preencode_tiles", "preencode_prompted_s", "preencode_prompted_tiles",
                            "embedding_cache_mb", "embedding_spill_mb"}
    assert figures["preencode_tiles"] == 4
    assert 0 <= figures["preencode_prompted_tiles"] <= 4
    assert 0 < figures["preencode_prompted_s"] <= figures["preencode_s"]
    assert figures["embedding_cache_mb"] == 2.0  # float16, 2 MiB a tile
    assert figures["embedding_spill_mb"] == 3 * 2.0  # the other three, as .npy files
    assert not list((tmp_path / "data" / "cache" / "embeddings").rglob("*.npy"))  # gone with the child
    # The peak is taken over all stages, so it can only grow; a model session alone is > 100 MB.
    assert 100 < figures["peak_rss_mb_scan"] <= figures["peak_rss_mb_preencode"] <= figures["peak_rss_mb"]
    assert figures["preencode_s"] > 0


def test_a_child_reports_its_own_peak_memory_not_its_parents():
    """The memory child is started by the benchmark, itself ~3 GB: the child's figure must
    not inherit the parent's high-water mark (ru_maxrss does, through vfork and exec)."""
    import subprocess
    import sys

    import numpy as np

    ballast = np.ones(400 * 2 ** 20, np.uint8)  # 400 MB, touched: the parent's peak
    code = "from appliance.glance.bench import _peak_rss_mb; print(_peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child_mb = float(out.stdout.strip().splitlines()[-1])
    assert ballast.sum() == 400 * 2 ** 20
    assert 10.0 < child_mb < 300.0
