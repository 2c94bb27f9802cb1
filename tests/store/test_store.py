"""The store's API on a real SQLite database: studies, decisions, sign-off, outbox, retention."""

from __future__ import annotations

import time

import numpy as np
import pytest

from appliance.errors import StoreError
from appliance.store import retention
from appliance.store import store as store_module
from appliance.store.store import Store

from store.helpers import add_study, make_config, make_study_inputs


@pytest.fixture
def store(tmp_path):
    with Store(make_config(tmp_path / "data")) as s:
        yield s


def test_add_study_stores_verified_files_and_queues_three_instances(store):
    photo, result = make_study_inputs(1)
    study = store.add_study(photo, "P1", "R", result, {"samples": 3})
    assert study.eye == "R" and study.delivery == "pending" and not study.reviewed
    assert np.array_equal(store.load_image_rgb(study.image_id), photo.rgb)
    stored = store.load_result(study.auto_result_id)
    assert np.array_equal(stored.mask(), result.mask())  # the shown lesions form the mask
    assert stored.payload["gaze"] == {"samples": 3}
    assert [l.id for l in stored.result.lesions] == [l.id for l in result.lesions]
    items = store.outbox(study_id=study.id)
    assert [i.kind for i in items] == ["photo", "seg", "sr"]
    assert len({i.sop_uid for i in items}) == 3 and len({i.series_uid for i in items}) == 3
    assert {i.study_uid for i in items} == {study.study_uid}
    assert items[0].sop_uid == store.get_image(study.image_id).sop_uid
    assert [i.seq for i in items] == sorted(i.seq for i in items)


def test_bad_inputs_are_refused_before_writing(store):
    photo, result = make_study_inputs(2)
    with pytest.raises(StoreError, match="eye"):
        store.add_study(photo, "P", "X", result)
    # Empty, DICOM's value separator, a control character, longer than DICOM's PatientID.
    for patient in (" ", "P\\1", "P\n1", "P" * 65):
        with pytest.raises(StoreError, match="patient ID"):
            store.add_study(photo, patient, "L", result)
    assert store.worklist() == [] and not (store.root / "studies").exists()
    assert store.add_study(photo, " P-1.a_b ", "L", result).patient_id == "P-1.a_b"
    uuid_id = "3f2a9c1e-7b4d-4e2a-9f1c-2d3e4f5a6b7c"  # a site's generated pseudonym
    assert store.add_study(photo, uuid_id, "R", result).patient_id == uuid_id
    assert store.add_study(photo, "MRN 12345/67", "R", result).patient_id == "MRN 12345/67"  # a clinic's format


def test_corrupt_file_is_reported_not_used(store):
    study = add_study(store, 3)
    path = store.path(store.get_image(study.image_id).path)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(StoreError, match="corrupt"):
        store.load_image_rgb(study.image_id)


def test_decisions_undo_and_sign_off_queue_new_instances(store):
    study = add_study(store, 4)
    rid = study.auto_result_id
    auto = store.load_result(rid)
    shown = list(auto.mask_lesion_ids)
    hidden = [l.id for l in auto.result.lesions if l.id not in shown]
    store.decide(rid, shown[0], "reject", "dr")
    store.decide(rid, shown[1], "reject", "dr")
    store.undo(rid, "dr")  # undoes the second reject
    if hidden:
        store.decide(rid, hidden[0], "accept", "dr")
    added = store.add_lesion(rid, 20.0, 20.0, "dr", radius_px=3)
    for x, y in ((-1.0, 20.0), (20.0, 1e9), (float("nan"), 20.0)):
        with pytest.raises(StoreError, match="not a point of the"):
            store.add_lesion(rid, x, y, "dr")
    with pytest.raises(StoreError):
        store.decide(rid, 424242, "accept", "dr")
    states, extra = store.lesion_states(rid)
    assert states[shown[0]] == "reject" and shown[1] not in states and len(extra) == 1

    review = store.sign_off(rid, "R1", "refer", "dr")
    assert review.kind == "reviewed" and review.based_on == rid and review.grade == "R1"
    final = store.load_result(review.id)
    # The reviewed result holds what the clinician accepted or added, nothing left alone.
    expected = set(hidden[:1]) | {added.lesion_id}
    assert set(final.mask_lesion_ids) == expected
    assert final.payload["decisions"][str(shown[0])] == "rejected"
    assert final.payload["decisions"][str(shown[1])] == "not reviewed"
    assert final.payload["decisions"][str(added.lesion_id)] == "added"
    assert np.array_equal(store.load_result(rid).mask(), auto.mask())  # the automatic result is untouched
    kinds = [(i.kind, i.result_id) for i in store.outbox(study_id=study.id)]
    assert kinds[3:] == [("seg", review.id), ("sr", review.id)]
    # An amendment is another new result with new UIDs, never an overwrite.
    again = store.sign_off(rid, "R2", "refer urgently", "dr2")
    items = store.outbox(study_id=study.id)
    assert len(items) == 7 and len({i.sop_uid for i in items}) == 7
    assert store.get_study(study.id).latest_result_id == again.id and store.get_study(study.id).reviewed
    with pytest.raises(StoreError, match="automatic result"):
        store.decide(review.id, shown[0], "accept", "dr")


def test_undo_takes_back_only_the_callers_own_decision(store):
    # Two clinicians on one photograph: clara's Undo must not revert carl's later rejection.
    study = add_study(store, 12)
    rid = study.auto_result_id
    a, b = list(store.load_result(rid).mask_lesion_ids)[:2]
    store.decide(rid, a, "accept", "clara")
    store.decide(rid, b, "reject", "carl")
    assert store.undo(rid, "clara").lesion_id == a
    assert store.lesion_states(rid)[0] == {b: "reject"}
    assert store.undo(rid, "clara") is None  # nothing of hers left to undo
    assert store.undo(rid, "carl").lesion_id == b


def test_wrong_wall_clock_never_reorders(store, monkeypatch):
    """Studies added while the clock runs backwards still list in the order they were made."""
    stamps = iter(["2030-01-01T00:00:00.000000Z", "1999-01-01T00:00:00.000000Z", "2001-06-01T00:00:00.000000Z"])
    monkeypatch.setattr(store_module, "utc_now", lambda: next(stamps))
    made = [add_study(store, s) for s in (10, 11, 12)]
    listed = store.worklist()
    assert [s.id for s in listed] == [m.id for m in reversed(made)]
    seqs = [i.seq for i in store.outbox()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_backoff_timer_set_by_a_wrong_clock_does_not_park_items(store):
    add_study(store, 13)
    items = store.outbox()
    store.record_failure(items[0].id, "x", time.time() + 10 * 86400)  # a clock ten days ahead set it
    store.record_failure(items[1].id, "x", time.time() + 60)  # an ordinary backoff
    due = {i.id for i in store.due_items(max_backoff_s=3600)}
    assert items[0].id in due and items[1].id not in due and items[2].id in due
    assert {i.id for i in store.due_items(ignore_backoff=True)} == {i.id for i in items}


def test_outbox_states_and_status(store):
    add_study(store, 14)
    first = store.outbox()[0]
    assert store.claim(first.id) and not store.claim(first.id)
    assert store.sync_status().sending == 1
    assert store.reset_sending() == 1
    store.record_failure(first.id, "boom", 0)
    status = store.sync_status()
    assert status.pending == 3 and status.failing == 1 and status.last_error == "boom"
    store.record_delivered(first.id)
    assert store.get_item(first.id).state == "delivered" and store.sync_status().delivered == 1


def test_disk_space_guard_refuses_before_anything_is_written(tmp_path):
    with Store(make_config(tmp_path / "data", data={"min_free_mb": 10**9})) as store:
        photo, result = make_study_inputs(15)
        with pytest.raises(StoreError, match="Not enough free space"):
            store.add_study(photo, "P", "L", result)
        assert store.worklist() == [] and store.outbox() == []
        assert not (store.root / "studies").exists()


def test_retention_only_after_confirmed_delivery_plus_period(tmp_path):
    with Store(make_config(tmp_path / "data", data={"retention_days": 2})) as store:
        study = add_study(store, 16)
        photo_path = store.path(store.get_image(study.image_id).path)
        far_future = time.time() + 365 * 86400
        assert retention.purge_expired(store, far_future) == 0  # nothing delivered yet
        items = store.outbox(study_id=study.id)
        store.record_delivered(items[0].id)
        store.record_delivered(items[1].id)
        assert retention.purge_expired(store, far_future) == 0  # the report is still pending
        store.record_delivered(items[2].id)
        assert retention.purge_expired(store, time.time() + 86400) == 0  # within the period
        assert retention.purge_expired(store, time.time() - 86400) == 0  # a clock set back
        assert photo_path.exists()
        sha = store.get_image(study.image_id).sha256
        copies = [store.root / folder / f"{sha}.jpg" for folder in retention.DERIVED_COPY_FOLDERS]
        for copy in copies:  # the UI's JPEG copies of the photograph
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(b"jpeg")
        assert retention.purge_expired(store, time.time() + 3 * 86400) == 1
        assert not photo_path.exists() and store.get_image(study.image_id).deleted_at
        assert not any(copy.exists() for copy in copies)  # they go with it
        with pytest.raises(StoreError, match="retention"):
            store.load_image_rgb(study.image_id)
        with pytest.raises(StoreError, match="retention"):
            store.sign_off(study.auto_result_id, "R0", "none", "dr")
        store.load_result(study.auto_result_id)  # the result files stay


def test_retention_keeps_the_annotations_of_a_removed_photograph(tmp_path):
    """Signed decisions keep their tiles when retention removes the photograph before any export:
    the tiles are cut from the photograph, so they must be cut before it goes."""
    from appliance.store import annotations

    with Store(make_config(tmp_path / "data", data={"retention_days": 1})) as store:
        study = add_study(store, 17)
        lesions = store.load_result(study.auto_result_id).result.lesions
        store.decide(study.auto_result_id, lesions[0].id, "accept", "dr")
        store.decide(study.auto_result_id, lesions[1].id, "reject", "dr")
        store.sign_off(study.auto_result_id, "R0", "none", "dr")
        for item in store.outbox(study_id=study.id):
            store.record_delivered(item.id)
        assert retention.purge_expired(store, time.time() + 2 * 86400) == 1
        counts = annotations.export(store, tmp_path / "export")["counts"]
    assert counts == {"accepted": 1, "rejected": 1, "added": 0, "skipped_no_tile": 0}


def test_store_is_shared_by_threads(store):
    import threading

    errors = []

    def work(seed):
        try:
            add_study(store, seed)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(20, 26)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(store.worklist()) == 6 and len(store.outbox()) == 18


def _crash_mid_write(data_dir) -> Path:
    """A process killed (power cut) after writing a study's photograph, before its row: the file
    and the write-intent mark stay. Returns the orphan file."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import os
        from appliance.config import load_config
        from appliance.store import files
        from appliance.store.store import Store
        store = Store(load_config(environ={{"GLANCESEG_DATA_DIR": {str(data_dir)!r}}}))
        with store._writing():
            files.atomic_write(store.path("studies/2.25.1/photo.png"), b"written, never committed")
            os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    return data_dir / "studies" / "2.25.1" / "photo.png"


def test_files_of_an_uncommitted_study_are_swept_unless_someone_is_writing(tmp_path):
    import fcntl
    import os

    config = make_config(tmp_path / "data")
    with Store(config) as store:
        kept = add_study(store, 30)
    orphan = _crash_mid_write(tmp_path / "data")
    assert orphan.exists() and list((tmp_path / "data" / "writes").iterdir())  # the crashed write's mark
    fd = os.open(str(tmp_path / "data" / "store.lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)  # another process is mid-write: leave its files alone
    try:
        Store(config).close()
        assert orphan.exists()
    finally:
        os.close(fd)
    with Store(config) as store:
        assert not orphan.parent.exists()
        assert list((tmp_path / "data" / "writes").iterdir()) == []
        store.load_image_rgb(kept.image_id)
        store.load_result(kept.auto_result_id)


def test_opening_the_store_walks_the_studies_only_after_a_write_was_cut_short(tmp_path, monkeypatch):
    """A year of a busy clinic is 75,000 files under studies/: walking them on every open cost
    2-3 s for every command, sync timer run and start. Only a crashed write leaves a mark."""
    walks = []
    real = Store._sweep_studies
    monkeypatch.setattr(Store, "_sweep_studies", lambda self: (walks.append(1), real(self))[1])
    config = make_config(tmp_path / "data")
    with Store(config) as store:  # a new store: no marks folder yet, so one walk
        add_study(store, 31)
    assert walks == [1]
    for _ in range(3):
        Store(config).close()
    assert walks == [1]  # every write finished: nothing to look for
    _crash_mid_write(tmp_path / "data")
    Store(config).close()
    assert walks == [1, 1]
    Store(config).close()
    assert walks == [1, 1]


def test_sign_off_refused_when_retention_removes_the_photograph_meanwhile(tmp_path, monkeypatch):
    from appliance.store import _decisions

    config = make_config(tmp_path / "data", data={"retention_days": 0})
    with Store(config) as store:
        study = add_study(store, 40)
        for item in store.outbox(study_id=study.id):  # delivered and confirmed: retention may take it
            store.record_delivered(item.id)
        lesion = store.load_result(study.auto_result_id).result.lesions[0]
        store.decide(study.auto_result_id, lesion.id, "accept", "dr")
        removed = []
        real_check_space = _decisions.files.check_space

        def retention_runs_in_another_process(*args, **kwargs):
            # Called after sign_off's own deleted_at check and before its transaction.
            real_check_space(*args, **kwargs)
            with Store(config) as other:
                removed.append(retention.purge_expired(other, time.time() + 1))

        monkeypatch.setattr(_decisions.files, "check_space", retention_runs_in_another_process)
        with pytest.raises(StoreError, match="removed by the retention policy"):
            store.sign_off(study.auto_result_id, "R1", "routine", "dr")
        assert removed == [1] and store.get_image(study.image_id).deleted_at
        assert [i for i in store.outbox() if i.state != "delivered"] == []  # nothing queued that cannot be built
        assert [r.kind for r in store.results_for_study(study.id)] == ["auto"]
        assert not list(store.root.rglob("result-review-*"))  # its files removed, not left for a sweep


def _built(store, item, data=b"DICM built copy with the patient ID"):
    """Leave a built file for ``item`` as the sync's build does (file, then its row)."""
    import hashlib

    rel = f"outbox/{item.sop_uid}.dcm"
    store.path("outbox").mkdir(exist_ok=True)
    store.path(rel).write_bytes(data)
    store.record_built(item.id, rel, hashlib.sha256(data).hexdigest())
    return store.path(rel)


def test_built_file_of_a_delivered_item_is_swept_but_never_under_a_running_pass(tmp_path):
    import fcntl
    import os

    config = make_config(tmp_path / "data")
    with Store(config) as store:
        study = add_study(store, 41)
        delivered, pending, _ = store.outbox(study_id=study.id)
        leftover = _built(store, delivered)
        store.record_delivered(delivered.id)  # a pass killed before it removed the file
        kept = _built(store, pending)
        unknown = store.path("outbox/2.25.1.dcm")  # built, the process died before its row was recorded
        unknown.write_bytes(b"no row names it")
        not_built_yet = store.path(f"outbox/{store.outbox(study_id=study.id)[2].sop_uid}.dcm")
        not_built_yet.write_bytes(b"a USB export building it: its row is not recorded yet")
    fd = os.open(str(tmp_path / "data" / "sync.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a sync pass is running: leave outbox/ alone
    try:
        Store(config).close()
        assert leftover.exists() and unknown.exists()
    finally:
        os.close(fd)
    Store(config).close()
    assert not leftover.exists() and not unknown.exists()
    assert kept.exists() and not_built_yet.exists()  # undelivered items keep their files


def test_retention_removes_a_built_copy_an_interrupted_pass_left(tmp_path):
    with Store(make_config(tmp_path / "data", data={"retention_days": 0})) as store:
        study = add_study(store, 42)
        items = store.outbox(study_id=study.id)
        leftover = _built(store, items[0])
        for item in items:
            store.record_delivered(item.id)
        assert retention.purge_expired(store, time.time() + 1) == 1
        assert not leftover.exists() and list(store.path("outbox").iterdir()) == []


def test_opening_the_store_leaves_a_build_in_progress_alone(tmp_path):
    import os

    config = make_config(tmp_path / "data")
    Store(config).close()
    outbox = tmp_path / "data" / "outbox"
    outbox.mkdir()
    fresh = outbox / ".2.25.7.dcm.4242.part"  # another process's sync is writing it right now
    fresh.write_bytes(b"half a DICOM file")
    stale = outbox / ".2.25.8.dcm.4243.part"  # a crash left it long ago
    stale.write_bytes(b"half a DICOM file")
    old = time.time() - store_module.OUTBOX_TMP_MIN_AGE_S - 60
    os.utime(stale, (old, old))
    Store(config).close()
    assert fresh.exists() and not stale.exists()


def test_a_failed_commit_leaves_no_files_behind(store, monkeypatch):
    import sqlite3

    study = add_study(store, 43)
    lesion = store.load_result(study.auto_result_id).result.lesions[0]
    store.decide(study.auto_result_id, lesion.id, "accept", "dr")
    before = sorted(store.root.rglob("*"))

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_enqueue", full)  # fails inside the transaction, after the files are written
    with pytest.raises(StoreError, match="disk is full"):
        add_study(store, 44)
    with pytest.raises(StoreError, match="disk is full"):
        store.sign_off(study.auto_result_id, "R1", "routine", "dr")
    assert sorted(store.root.rglob("*")) == before  # nothing left for a later sweep
    assert len(store.worklist()) == 1 and len(store.results_for_study(study.id)) == 1
    # An exception after the COMMIT: the rows name the files, so they stay.
    store._remove_uncommitted([store.get_image(study.image_id).path])
    store.load_image_rgb(study.image_id)


def test_a_retention_pass_looks_only_at_the_files_of_photographs_removed_since_the_last(tmp_path, monkeypatch):
    """Each pass (after every sync pass, once a minute) looked up on disk every photograph ever
    removed and its JPEG copies: 45,000 look-ups after a year. Now only those removed since the
    last pass that finished; the files of a pass interrupted after marking are still removed."""
    from pathlib import Path

    with Store(make_config(tmp_path / "data", data={"retention_days": 1})) as store:
        studies = [add_study(store, 30 + k) for k in range(3)]
        for item in store.outbox():
            store.claim(item.id)
            store.record_delivered(item.id)
        later = time.time() + 2 * 86400
        assert retention.purge_expired(store, later) == 3
        photos = {str(store.path(store.get_image(s.image_id).path)) for s in studies}
        looked: list[str] = []
        real_exists = Path.exists
        monkeypatch.setattr(Path, "exists", lambda self: looked.append(str(self)) or real_exists(self))
        assert retention.purge_expired(store, later) == 0
        assert not photos & set(looked)
        monkeypatch.undo()
        # An interrupted pass: the row marked, the file still there (put back here).
        fresh = add_study(store, 40)
        for item in store.outbox(study_id=fresh.id):
            store.claim(item.id)
            store.record_delivered(item.id)
        photo = store.path(store.get_image(fresh.image_id).path)
        monkeypatch.setattr(retention.files, "remove_durable", lambda path: (_ for _ in ()).throw(OSError("crash")))
        with pytest.raises(OSError):
            retention.purge_expired(store, later)
        monkeypatch.undo()
        assert store.get_image(fresh.image_id).deleted_at and photo.exists()
        retention.purge_expired(store, later)
        assert not photo.exists()
