"""``glanceseg bench``'s memory child: the shipped path's peak RSS, pre-encode time and cache size."""

from __future__ import annotations

from pathlib import Path

import cv2

from appliance.glance.bench import child_memory_figures

DEMO = Path(__file__).resolve().parents[2] / "appliance" / "demo" / "IDRiD_03.jpg"


def test_memory_child_reports_every_stage(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), cv2.imread(str(DEMO))[1000:1448, 1250:1698])  # 448 px: a 2x2 tile grid
    figures = child_memory_figures(None, crop)
    assert set(figures) == {"peak_rss_mb", "peak_rss_mb_scan", "peak_rss_mb_preencode", "preencode_s",
                            "preencode_tiles", "embedding_cache_mb"}
    assert figures["preencode_tiles"] == 4
    assert figures["embedding_cache_mb"] == 4 * 2.0  # the full cache: float16, 2 MiB a tile
    # The peak is taken over all stages, so it can only grow; a model session alone is > 100 MB.
    assert 100 < figures["peak_rss_mb_scan"] <= figures["peak_rss_mb_preencode"] <= figures["peak_rss_mb"]
    assert figures["preencode_s"] > 0
