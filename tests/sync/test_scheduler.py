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
