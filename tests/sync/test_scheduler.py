"""The sync scheduler's notifications (what drives the LEDs and the UI's badge), on a real store."""

from __future__ import annotations

import threading
import time

from appliance.store.store import Store
from appliance.sync.scheduler import SyncScheduler

from store.helpers import add_study, make_config


def test_notifications_from_several_threads_never_overlap_and_the_last_is_current(tmp_path):
    # Studies queued by the UI's threads and the sync thread's progress both notify. A listener
    # that ran twice at once could leave the LEDs half one state and half another (seen: the
    # ready and the pending LED lit together), and a stale indicator applied last would stay.
    config = make_config(tmp_path / "data", "http://127.0.0.1:9/dicom-web")
    with Store(config) as store:
        scheduler = SyncScheduler(store, config)
        lock, running, most, shown = threading.Lock(), [0], [0], []

        def slow_listener(indicator):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.005)  # the LED writes of one update
            shown.append(indicator.pending)
            with lock:
                running[0] -= 1

        scheduler.add_listener(slow_listener)
        threads = [threading.Thread(target=add_study, args=(store, k, f"P{k}", "L")) for k in range(3)]
        threads += [threading.Thread(target=scheduler.syncer.on_progress, args=(phase,))
                    for phase in ("syncing", "idle") * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert most[0] == 1
        assert shown[-1] == store.sync_status().pending > 0


def test_a_status_panel_that_cannot_claim_its_pins_does_not_stop_the_station(tmp_path, caplog):
    # Off a Jetson (or with a busy pin, or gpiochip not yet accessible at boot) the panel fails;
    # the service must keep reading and delivering, not exit and take the kiosk's screen down.
    from appliance.sync.scheduler import start_background_sync

    config = make_config(tmp_path / "data", "http://127.0.0.1:9/dicom-web", hw={"enabled": True, "pin_factory": "jetson"})
    with Store(config) as store:
        scheduler = start_background_sync(store, config)
        try:
            assert scheduler is not None and getattr(scheduler, "panel", None) is None
            assert "status panel is unavailable" in caplog.text
        finally:
            scheduler.stop()


def test_stopping_the_services_switches_the_panel_off(tmp_path):
    # systemctl stop: the "ready" LED must not stay lit for a station that is down.
    from appliance.sync.scheduler import start_background_sync
    from appliance.ui.services import build_services

    config = make_config(tmp_path / "data", "http://127.0.0.1:9/dicom-web", hw={"enabled": True, "pin_factory": "mock"})
    with Store(config) as store:
        scheduler = start_background_sync(store, config)
        panel = scheduler.panel
        services = build_services(config, store=store, scheduler=scheduler)
        services.close()
        assert scheduler.panel is None and all(led is None or led.closed for led in panel.leds.values())


def test_a_pass_held_by_another_process_is_not_an_error(tmp_path):
    # The sync timer's long pass holds the lock: the app's scheduler must not wait 10 minutes
    # and then light the error LED while delivery is going fine.
    import fcntl
    import os

    from appliance.sync.engine import sync_lock

    config = make_config(tmp_path / "data", "http://127.0.0.1:9/dicom-web")
    with Store(config) as store:
        add_study(store, 1)
        scheduler = SyncScheduler(store, config)
        scheduler.syncer.client.reachable = lambda timeout_s: True  # the server answers its probe
        with sync_lock(store, 1.0):  # what the timer's `sync --once` holds
            started = time.monotonic()
            assert scheduler.run_once(force=True) is None
            assert time.monotonic() - started < 5
        indicator = scheduler.indicator()
        assert not indicator.error and indicator.last_error is None and indicator.pending == 3


def test_a_station_without_a_server_still_shows_what_waits_on_its_panel(tmp_path, caplog):
    # An outreach station delivering by USB only: the panel used to be built with the scheduler
    # alone, so with no [dicomweb] url every LED stayed dark and the button did nothing.
    from appliance.ui.cli_ui import appliance_services

    pins = dict(sync_button_pin=17, led_ready_pin=5, led_syncing_pin=6, led_pending_pin=13, led_error_pin=19,
                button_bounce_s=0.0)
    config = make_config(tmp_path / "data", hw={"enabled": True, "pin_factory": "mock", **pins})
    services = appliance_services(config)
    try:
        assert services.scheduler is None and services.panel is not None
        panel = services.panel.panel
        leds = {name: led for name, led in panel.leds.items()}
        assert leds["ready"].is_lit and not leds["pending"].is_lit
        add_study(services.store, 1, "P1", "L")
        assert leds["pending"].is_lit and not leds["ready"].is_lit and not leds["error"].is_lit
        panel.button.pin.drive_low()  # pressed
        assert "no DICOMweb server is configured" in caplog.text
    finally:
        services.close()
        services.store.close()
    assert services.panel.panel is None and all(led.closed for led in leds.values())
