"""The glance engine's cells: a photograph is detected in bands, and bands change nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from appliance.glance import engine as engine_mod
from appliance.glance.engine import BAND_ROWS, GlanceEngine
from appliance.imaging.io import load_photograph

DEMO = Path(__file__).resolve().parents[2] / "appliance" / "demo" / "IDRiD_03.jpg"


@pytest.fixture(scope="module")
def photo():
    from appliance.config import ImagingConfig

    return load_photograph(DEMO, ImagingConfig())


def test_a_whole_photograph_is_grouped_in_bands_covering_every_cell_once(config, photo):
    session = GlanceEngine.from_config(config, use_model=False).open(photo)
    cells = session.fov_cells()
    groups = session._groups(cells)
    assert len(groups) >= 2  # the demo photograph is ~44 cell rows tall
    assert sorted(c.key for g in groups for c in g) == sorted(c.key for c in cells)
    for group in groups:
        rows = {c.key[0] for c in group}
        assert max(rows) - min(rows) < BAND_ROWS


def test_bands_give_the_lesions_of_one_whole_window(config, photo, monkeypatch):
    """Cell results depend only on the photograph and the cell, never on the window."""
    banded = GlanceEngine.from_config(config, use_model=False).open(photo).scan(use_model=False)
    monkeypatch.setattr(engine_mod, "BAND_ROWS", 10_000)
    whole = GlanceEngine.from_config(config, use_model=False).open(photo).scan(use_model=False)
    assert banded.lesions
    as_tuples = [(l.id, round(l.x, 6), round(l.y, 6), round(l.score, 9), l.area_px) for l in banded.lesions]
    assert as_tuples == [(l.id, round(l.x, 6), round(l.y, 6), round(l.score, 9), l.area_px) for l in whole.lesions]


def test_opening_a_photograph_does_not_log_its_file_name(config, photo, caplog):
    """The file name may be the patient's (``Smith_John_1957-03-02_OD.jpg``): the INFO line of
    every opened photograph went to the journal and the support bundle with it."""
    import dataclasses

    named = dataclasses.replace(photo, source="Smith_John_1957-03-02_OD.jpg")
    with caplog.at_level("DEBUG", logger="appliance.glance"):
        GlanceEngine.from_config(config, use_model=False).open(named)
    assert "gradable" in caplog.text
    assert "Smith" not in caplog.text and "1957" not in caplog.text


def test_embeddings_spill_under_the_data_folder_or_stay_in_ram_when_it_is_not_writable(config, tmp_path, caplog):
    spill = engine_mod._spill(config)
    assert spill.folder.parent == config.data_dir / "cache" / "embeddings"
    assert spill.capacity == config.model.spill_tiles
    assert engine_mod._spill(config.replace(model={"spill_tiles": 0})) is None
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    with caplog.at_level("WARNING", logger="appliance.glance.engine"):
        assert engine_mod._spill(config.replace(data={"dir": blocked})) is None
    assert "RAM only" in caplog.text


def test_a_scan_asked_to_stop_ends_at_the_next_model_tile_without_encoding_the_rest(config, photo, int8_runtime,
                                                                                      monkeypatch):
    """The UI's analysis worker stops a scan at shutdown: an encoder run left going when the
    process exits aborts it, and a whole photograph outlasts systemd's stop timeout."""
    from appliance.errors import Cancelled
    from appliance.glance.predictor import SamPredictor

    session = GlanceEngine(config, predictor=SamPredictor(int8_runtime)).open(photo)
    # Cells whose candidates prompt the model on two tiles of the demo photograph.
    cells = [c for c in session.fov_cells() if 10 <= c.key[0] <= 11 and 5 <= c.key[1] <= 7]
    stop = threading.Event()
    encoded = []
    real_encode = int8_runtime.encode

    def encode_then_stop(tile):
        encoded.append(tile.shape)
        stop.set()  # the appliance is told to stop while the first tile is being encoded
        return real_encode(tile)

    monkeypatch.setattr(int8_runtime, "encode", encode_then_stop)
    with pytest.raises(Cancelled):
        session.process(cells, stop=stop)
    assert len(encoded) == 1
    assert session.done  # the detection stage ran; the model stage stopped after one tile

    stop.set()
    with pytest.raises(Cancelled):  # set before anything: not one band is searched
        GlanceEngine.from_config(config, use_model=False).open(photo).scan(use_model=False, stop=stop)
