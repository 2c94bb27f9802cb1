"""The import queue kept on disk: a photograph the technician was told was imported is analysed
even when the appliance stops first (end of day, a power cut), and never stored twice."""

from __future__ import annotations

import json
import threading

from appliance.ui import analysis
from appliance.ui.importing import import_bytes
from appliance.ui.services import Services


def _queue_folder(config):
    return config.data_dir / "import-queue"


def test_imports_not_yet_analysed_when_the_appliance_stops_are_analysed_at_the_next_start(
        ui_config, engine, fundus_png, monkeypatch):
    monkeypatch.setattr(analysis, "CLOSE_WAIT_S", 0.3, raising=False)
    first = Services(config=ui_config, engine=engine)
    gate, started = threading.Event(), threading.Event()
    real_segment = first.analysis.segment

    def slow_segment(photo, eng, stop):
        started.set()
        gate.wait(30)  # the first photograph is still being analysed when the appliance stops
        from appliance.glance.scan import segment_photograph
        return (real_segment or segment_photograph)(photo, eng, stop=stop)

    first.analysis.segment = slow_segment
    raw = fundus_png.read_bytes()
    for patient in ("P-1", "P-2"):
        import_bytes(raw, fundus_png.name, patient, "L", ui_config, first)
    assert started.wait(30)
    assert len(list(_queue_folder(ui_config).glob("*.json"))) == 2
    first.close()  # systemctl stop: the job in flight is cut short, the queued one never started
    first.store.close()
    gate.set()

    second = Services(config=ui_config, engine=engine)
    try:
        assert second.analysis.wait_idle(300)
        assert sorted(s.patient_id for s in second.store.worklist()) == ["P-1", "P-2"]
        assert not [j for j in second.analysis.jobs() if j.state == "failed"]
        assert list(_queue_folder(ui_config).iterdir()) == []
    finally:
        second.close()
        second.store.close()


def test_a_queued_import_already_stored_is_not_stored_twice(ui_config, engine, fundus_png):
    # The stop came after the study was stored but before its queue entry was removed.
    services = Services(config=ui_config, engine=engine)
    raw = fundus_png.read_bytes()
    import_bytes(raw, fundus_png.name, "P-7", "R", ui_config, services)
    assert services.analysis.wait_idle(300)
    services.close()
    services.store.close()
    folder = _queue_folder(ui_config)
    assert list(folder.iterdir()) == []
    (folder / "00000000000000000001-000001.photo").write_bytes(raw)
    (folder / "00000000000000000001-000001.json").write_text(json.dumps({"patient_id": "P-7", "eye": "R",
                                                                         "name": fundus_png.name}))
    (folder / "00000000000000000002-000002.photo").write_bytes(raw)  # cut before its JSON: never acknowledged
    again = Services(config=ui_config, engine=engine)
    try:
        assert again.analysis.wait_idle(300)
        assert [s.patient_id for s in again.store.worklist()] == ["P-7"]
        assert list(folder.iterdir()) == []
    finally:
        again.close()
        again.store.close()


def test_stopping_the_appliance_stops_the_scan_in_flight_and_keeps_its_photograph_for_the_next_start(
        ui_config, engine, fundus_png, monkeypatch):
    """systemd stops the service within 30 s, and a photograph's scan can take longer: the worker
    stops the real scan between bands instead of finishing it (or being left running at exit)."""
    from appliance.glance import engine as engine_mod

    monkeypatch.setattr(analysis, "CLOSE_WAIT_S", 120.0, raising=False)
    monkeypatch.setattr(engine_mod, "BAND_ROWS", 2)  # the crop's scan in several bands
    searching, go_on = threading.Event(), threading.Event()
    real_detect = engine_mod.detect

    def detect(*args, **kwargs):
        searching.set()
        go_on.wait(30)
        return real_detect(*args, **kwargs)

    monkeypatch.setattr(engine_mod, "detect", detect)
    services = Services(config=ui_config, engine=engine)
    import_bytes(fundus_png.read_bytes(), fundus_png.name, "P-9", "L", ui_config, services)
    assert searching.wait(60)  # the real scan is under way
    closing = threading.Thread(target=services.close)
    closing.start()
    while not services.analysis._stop.is_set():
        closing.join(0.01)
    go_on.set()  # the band in flight finishes; the next one is not started
    closing.join(150)
    assert not closing.is_alive()
    assert not services.analysis._thread.is_alive()
    assert services.store.worklist() == []  # stopped, not finished and stored
    services.store.close()
    assert len(list(_queue_folder(ui_config).glob("*.json"))) == 1

    monkeypatch.setattr(engine_mod, "detect", real_detect)
    again = Services(config=ui_config, engine=engine)
    try:
        assert again.analysis.wait_idle(300)
        assert [s.patient_id for s in again.store.worklist()] == ["P-9"]
    finally:
        again.close()
        again.store.close()


def test_a_queued_import_that_cannot_be_read_back_is_logged_without_its_file_name(ui_config, engine, caplog):
    """The refusal names the file; a file named after the patient went into the journal."""
    folder = _queue_folder(ui_config)
    folder.mkdir(parents=True)
    (folder / "00000000000000000001-000001.photo").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (folder / "00000000000000000001-000001.json").write_text(json.dumps(
        {"patient_id": "P-7", "eye": "R", "name": "Smith_John_1957-03-02_OD.jpg"}))
    with caplog.at_level("DEBUG"):
        services = Services(config=ui_config, engine=engine)
        try:
            assert services.analysis.wait_idle(60)
        finally:
            services.close()
            services.store.close()
    assert "cannot be read back" in caplog.text and "the photograph" in caplog.text
    assert "Smith" not in caplog.text and "1957" not in caplog.text and "P-7" not in caplog.text
    assert (folder / "00000000000000000001-000001.photo").exists()  # left for the technician
