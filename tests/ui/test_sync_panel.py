"""The Sync page's list of waiting items on a store that has delivered a lot."""

from __future__ import annotations

from appliance.store.store import Store
from appliance.ui.sync_panel import queued_items
from store.helpers import add_study, make_config


def test_the_waiting_items_are_read_without_the_delivered_ones(tmp_path):
    """The list shows the oldest waiting items up to its limit, and reads only waiting items: it
    read the whole outbox (75,000 delivered items after a year) to show the few still queued."""
    store = Store(make_config(tmp_path / "data"))
    try:
        studies = [add_study(store, k, patient=f"P{k}") for k in range(4)]
        for study in studies[:3]:
            for item in store.outbox(study_id=study.id):
                store.claim(item.id)
                store.record_delivered(item.id)
        statements: list[str] = []
        store.connection.set_trace_callback(statements.append)
        try:
            rows = queued_items(store, limit=2)
        finally:
            store.connection.set_trace_callback(None)
        waiting = store.outbox(study_id=studies[3].id)
        assert [r["seq"] for r in rows] == [i.seq for i in waiting[:2]] and {r["patient_id"] for r in rows} == {"P3"}
        outbox_reads = [s for s in statements if s.startswith("SELECT * FROM outbox")]
        assert outbox_reads and all("'pending'" in s and "LIMIT" in s for s in outbox_reads), outbox_reads
    finally:
        store.close()
