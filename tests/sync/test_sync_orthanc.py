"""Real studies synced to a real Orthanc, read back and compared with the local store."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from appliance.errors import SyncError
from appliance.store.store import Store
from appliance.sync.dicomweb import DicomwebClient
from appliance.sync.engine import Syncer
from appliance.sync.scheduler import SyncScheduler

from sync.checks import check_server, sr_texts
from sync.orthanc import PASSWORD, USER

pytestmark = pytest.mark.orthanc
from store.helpers import add_study, make_config, make_study_inputs

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path, orthanc, **over):
    return make_config(tmp_path / "data", orthanc.dicomweb,
                       dicomweb={"user": USER, "password": PASSWORD, **over.pop("dicomweb", {})}, **over)


def test_sync_delivers_reads_back_and_masks_match(tmp_path, clean_orthanc):
    config = _config(tmp_path, clean_orthanc)
    with Store(config) as store:
        studies = [add_study(store, seed, f"P{seed}", "LR"[seed % 2]) for seed in range(3)]
        rid = studies[0].auto_result_id
        store.decide(rid, store.load_result(rid).result.lesions[0].id, "reject", "dr_a")
        store.add_lesion(rid, 40.0, 30.0, "dr_a", radius_px=4)
        store.sign_off(rid, "R1", "routine rescreen", "dr_a")
        report = Syncer(store, config).run_pass()
        assert report.failed == 0 and report.remaining == 0
        assert report.delivered == 3 * 3 + 2
        outcome = check_server(store, clean_orthanc)
        assert (outcome.lost, outcome.duplicated, outcome.corrupt, outcome.undelivered) == (0, 0, 0, 0)
        assert outcome.server_instances == 11

        # The reviewed SEG differs from the automatic one exactly by the clinician's decisions.
        segs = [i for i in store.outbox(study_id=studies[0].id) if i.kind == "seg"]
        client = DicomwebClient(config.dicomweb)
        masks = []
        for item in segs:
            ds = pydicom.dcmread(io.BytesIO(client.retrieve_instance(item.study_uid, item.series_uid, item.sop_uid)))
            seg = hd.seg.Segmentation.from_dataset(ds)
            assert seg.SegmentSequence[0].SegmentLabel == "Microaneurysm"
            assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == \
                store.get_image(item.image_id).sop_uid
            masks.append(seg.pixel_array.reshape(120, 160) > 0)
        assert not np.array_equal(masks[0], masks[1])
        sr_items = [i for i in store.outbox(study_id=studies[0].id) if i.kind == "sr"]
        sr = pydicom.dcmread(io.BytesIO(clean_orthanc.instance_file(sr_items[1].sop_uid)))
        text = " | ".join(sr_texts(sr))
        assert "R1" in text and "routine rescreen" in text and "rejected" in text and "added" in text

        # A second pass finds nothing to do and the server gains nothing.
        again = Syncer(store, config).run_pass(ignore_backoff=True)
        assert again.delivered == 0 and again.already_there == 0
        assert len(clean_orthanc.sop_uids()) == 11


def test_instance_already_on_server_is_confirmed_not_resent(tmp_path, clean_orthanc):
    """A pass that died after the upload but before recording it: the next pass only confirms."""
    config = _config(tmp_path, clean_orthanc)
    with Store(config) as store:
        add_study(store, 7, "P7", "L")
        client = DicomwebClient(config.dicomweb)
        from appliance.sync.instances import materialise

        for item in store.outbox():
            path, _ = materialise(store, item)
            client.store(item.study_uid, item.sop_uid, path.read_bytes())
        report = Syncer(store, config).run_pass()
        assert report.already_there == 3 and report.delivered == 0
        assert check_server(store, clean_orthanc).duplicated == 0


def test_wrong_password_keeps_items_pending_with_error_and_backoff(tmp_path, clean_orthanc):
    config = _config(tmp_path, clean_orthanc, dicomweb={"password": "wrong"})
    with Store(config) as store:
        add_study(store, 1, "P1", "R")
        report = Syncer(store, config).run_pass()
        assert report.failed == 1 and report.remaining == 3  # the pass stops at the first refusal
        status = store.sync_status()
        assert status.pending == 3 and status.failing == 1 and "credentials" in status.last_error
        assert [i.attempts for i in store.outbox()] == [1, 0, 0]
        # Backoff timers hold the items back from an automatic pass, not from a forced one.
        assert Syncer(store, config).run_pass().skipped_backoff in (0, 1, 2, 3)
        good = _config(tmp_path, clean_orthanc)
        assert Syncer(store, good).run_pass(ignore_backoff=True).delivered == 3


def test_scheduler_syncs_when_reachable_and_on_trigger(tmp_path, clean_orthanc):
    config = _config(tmp_path, clean_orthanc, sync={"interval_s": 3600})
    seen = []
    with Store(config) as store:
        scheduler = SyncScheduler(store, config)
        scheduler.add_listener(lambda ind: seen.append(ind.state))
        add_study(store, 2, "P2", "L")
        report = scheduler.run_once()
        assert report is not None and report.delivered == 3
        assert "syncing" in seen and seen[-1] == "ready"
        add_study(store, 3, "P3", "L")
        with scheduler:
            scheduler.trigger()
            for _ in range(300):
                if store.sync_status().pending == 0:
                    break
                import time

                time.sleep(0.05)
        assert store.sync_status().pending == 0
        assert check_server(store, clean_orthanc).lost == 0


def test_scheduler_offline_probe_leaves_items_alone(tmp_path):
    config = make_config(tmp_path / "data", "http://127.0.0.1:9/dicom-web", dicomweb={"probe_timeout_s": 0.5})
    with Store(config) as store:
        add_study(store, 4, "P4", "L")
        scheduler = SyncScheduler(store, config)
        assert scheduler.run_once() is None
        assert all(i.attempts == 0 for i in store.outbox())
        assert scheduler.indicator().state == "pending"



#: Runs the real ``glanceseg`` entry point, leaving out command modules other areas have not
#: written yet (so these tests do not depend on them).
GLANCESEG = (
    "import importlib.util, sys\n"
    "import appliance.cli as cli\n"
    "cli.COMMAND_MODULES = tuple(m for m in cli.COMMAND_MODULES if importlib.util.find_spec(m))\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def _glanceseg(args, env):
    return subprocess.run([sys.executable, "-c", GLANCESEG, *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_cli_sync_once_exit_status(tmp_path, clean_orthanc):
    config = _config(tmp_path, clean_orthanc)
    with Store(config) as store:
        add_study(store, 5, "P5", "L")
    env = {**os.environ, "GLANCESEG_DATA_DIR": str(tmp_path / "data"), "GLANCESEG_DATA_MIN_FREE_MB": "1",
           "GLANCESEG_DICOMWEB_USER": USER, "GLANCESEG_DICOMWEB_PASSWORD": PASSWORD}
    env.pop("GLANCESEG_CONFIG", None)
    down = _glanceseg(["sync", "--once"], {**env, "GLANCESEG_DICOMWEB_URL": "http://127.0.0.1:9/dicom-web",
                                            "GLANCESEG_DICOMWEB_TIMEOUT_S": "1"})
    assert down.returncode == 1 and '"failed": 1' in down.stdout and '"remaining": 3' in down.stdout, down.stderr
    up = _glanceseg(["sync", "--once"], {**env, "GLANCESEG_DICOMWEB_URL": clean_orthanc.dicomweb})
    assert up.returncode == 0, up.stdout + up.stderr
    assert '"delivered": 3' in up.stdout
    again = _glanceseg(["sync", "--once"], {**env, "GLANCESEG_DICOMWEB_URL": clean_orthanc.dicomweb})
    assert again.returncode == 0 and '"delivered": 0' in again.stdout
    assert len(clean_orthanc.sop_uids()) == 3


def test_background_sync_with_status_panel_and_button(tmp_path, clean_orthanc):
    """``start_background_sync`` with ``[hw]`` on gpiozero's MockFactory: the button syncs, LEDs follow."""
    import time

    from appliance.sync.scheduler import start_background_sync

    hw = {"enabled": True, "pin_factory": "mock", "sync_button_pin": 17, "led_ready_pin": 5, "led_syncing_pin": 6,
          "led_pending_pin": 13, "led_error_pin": 19, "button_bounce_s": 0.0, "blink_s": 0.01}
    config = _config(tmp_path, clean_orthanc, sync={"interval_s": 3600}, hw=hw)
    with Store(config) as store:
        assert start_background_sync(store, make_config(tmp_path / "other")) is None  # no server configured
        scheduler = start_background_sync(store, config)
        try:
            panel = scheduler.panel
            deadline = time.monotonic() + 30
            while scheduler.passes < 1 and time.monotonic() < deadline:  # the first, automatic pass
                time.sleep(0.02)
            add_study(store, 8, "P8", "R")  # the pending LED lights as the study is queued
            pending_led = panel.leds["pending"].pin
            assert pending_led.state
            button = panel.button.pin
            button.drive_low()
            button.drive_high()
            while store.sync_status().pending and time.monotonic() < deadline:
                time.sleep(0.02)
            assert store.sync_status().pending == 0
            def shows_ready() -> bool:  # one update writes the four LEDs in turn: wait for all of them
                return panel.leds["ready"].pin.state and not pending_led.state and not panel.leds["error"].pin.state

            while not shows_ready() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert shows_ready()
        finally:
            scheduler.stop()
        assert check_server(store, clean_orthanc).lost == 0
