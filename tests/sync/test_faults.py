"""Fault tests with random timing: kill -9 mid-write and mid-upload, Orthanc stopped mid-sync,
a proxy that fails, hangs or drops connections, and a full disk. Afterwards nothing may be lost,
duplicated on the server, or corrupt, and the outbox must be drained.

Each test repeats ``GLANCESEG_FAULT_TRIALS`` times (default 5) with fresh random timings and logs a
line ``FAULTS <name>: trials=.. studies=.. lost=.. duplicated=.. corrupt=..`` (run with ``-s`` or
see the captured log) for the report.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.errors import StoreError
from appliance.store.store import Store
from appliance.sync.engine import Syncer

from store.helpers import add_study, make_config
from sync.checks import check_server
from sync.faulty_proxy import FaultyProxy
from sync.orthanc import PASSWORD, USER

pytestmark = pytest.mark.orthanc

logger = logging.getLogger(__name__)
TRIALS = int(os.environ.get("GLANCESEG_FAULT_TRIALS", "5"))
TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent


def _config(data_dir, url, **over):
    dicomweb = {"user": USER, "password": PASSWORD, **over.pop("dicomweb", {})}
    return make_config(data_dir, url, dicomweb=dicomweb, **over)


def _drain(store, config, max_passes=60):
    """Run forced passes until the outbox is empty (bounded)."""
    for _ in range(max_passes):
        report = Syncer(store, config).run_pass(ignore_backoff=True)
        if report.remaining == 0:
            return True
    return False


def _report(name, totals):
    line = f"FAULTS {name}: " + " ".join(f"{k}={v}" for k, v in totals.items())
    logger.warning(line)
    print(line)


def _tally(totals: dict, outcome, studies: int, instances: int) -> None:
    """Add one trial's outcome to the totals; every study's three instances must be on the server."""
    totals["trials"] += 1
    totals["studies"] += studies
    for key in ("lost", "duplicated", "corrupt"):
        totals[key] += getattr(outcome, key)
    assert outcome.server_instances == instances and outcome.undelivered == 0


def _child(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(REPO)])}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)


def _wait_ready(proc):
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read()


def _check_local(store) -> int:
    """Every committed study is complete and verifies; return how many there are."""
    assert store.connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    studies = store.worklist(limit=10_000)
    for study in studies:
        store.load_image_rgb(study.image_id)
        store.load_result(study.auto_result_id)
        assert len(store.outbox(study_id=study.id)) == 3
    assert not list(store.root.rglob("*.part")), "a temporary file survived the restart"
    return len(studies)


WRITER = """
import sys
from appliance.store.store import Store
from store.helpers import add_study, make_config
store = Store(make_config(sys.argv[1]))
print("ready", flush=True)
for seed in range(int(sys.argv[2]), int(sys.argv[2]) + 40):
    add_study(store, seed, f"P{seed}", "L", h=480, w=640)
"""


def test_kill9_mid_write(tmp_path, clean_orthanc):
    rng = random.Random(1)
    totals = {"trials": 0, "studies": 0, "killed_mid_file_write": 0, "killed_between_files_and_row": 0,
              "lost": 0, "duplicated": 0, "corrupt": 0}
    for trial in range(TRIALS):
        clean_orthanc.clear()
        data = tmp_path / f"t{trial}"
        proc = _child(WRITER, str(data), str(trial * 100))
        _wait_ready(proc)
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Evidence of where the kill landed: a temporary file (mid file write) or a study folder
        # that no row names (files written, transaction not committed).
        totals["killed_mid_file_write"] += int(any(data.rglob("*.part")))
        folders = {p.name for p in (data / "studies").iterdir()} if (data / "studies").exists() else set()
        config = _config(data, clean_orthanc.dicomweb)
        with Store(config) as store:
            n = _check_local(store)
            named = {s.study_uid for s in store.worklist(limit=10_000)}
            totals["killed_between_files_and_row"] += int(bool(folders - named))
            left = {p.name for p in (data / "studies").iterdir()} if (data / "studies").exists() else set()
            assert left == named  # the files of an uncommitted study were swept
            assert _drain(store, config)
            outcome = check_server(store, clean_orthanc)
        _tally(totals, outcome, studies=n, instances=3 * n)
    _report("kill9_mid_write", totals)
    assert totals["lost"] == totals["duplicated"] == totals["corrupt"] == 0


UPLOADER = """
import sys
from appliance.store.store import Store
from appliance.sync.engine import Syncer
from store.helpers import make_config
config = make_config(sys.argv[1], sys.argv[2], dicomweb={"user": sys.argv[3], "password": sys.argv[4]})
store = Store(config)
print("ready", flush=True)
Syncer(store, config).run_pass(ignore_backoff=True)
print("done", flush=True)
"""


def test_kill9_mid_upload(tmp_path, clean_orthanc):
    rng = random.Random(2)
    totals = {"trials": 0, "studies": 0, "killed_mid_pass": 0, "lost": 0, "duplicated": 0, "corrupt": 0}
    for trial in range(TRIALS):
        clean_orthanc.clear()
        data = tmp_path / f"t{trial}"
        config = _config(data, clean_orthanc.dicomweb)
        with Store(config) as store:
            for seed in range(4):
                add_study(store, trial * 10 + seed, f"P{seed}", "R", h=480, w=640)
        proc = _child(UPLOADER, str(data), clean_orthanc.dicomweb, USER, PASSWORD)
        _wait_ready(proc)
        time.sleep(rng.uniform(0.0, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Store(config) as store:
            before = store.sync_status()
            totals["killed_mid_pass"] += int(before.pending + before.sending > 0)
            assert _drain(store, config)
            outcome = check_server(store, clean_orthanc)
        _tally(totals, outcome, studies=4, instances=12)
    _report("kill9_mid_upload", totals)
    assert totals["lost"] == totals["duplicated"] == totals["corrupt"] == 0


def test_orthanc_stopped_mid_sync_and_restarted(tmp_path, clean_orthanc):
    rng = random.Random(3)
    totals = {"trials": 0, "studies": 0, "interrupted": 0, "lost": 0, "duplicated": 0, "corrupt": 0}
    for trial in range(TRIALS):
        clean_orthanc.clear()
        config = _config(tmp_path / f"t{trial}", clean_orthanc.dicomweb, dicomweb={"timeout_s": 3.0})
        with Store(config) as store:
            for seed in range(4):
                add_study(store, trial * 10 + seed, f"P{seed}", "L", h=480, w=640)
            worker = threading.Thread(target=lambda: Syncer(store, config).run_pass(ignore_backoff=True))
            worker.start()
            time.sleep(rng.uniform(0.0, 0.8))
            clean_orthanc.stop(kill=rng.random() < 0.5)
            worker.join(60)
            totals["interrupted"] += int(store.sync_status().pending > 0)
            clean_orthanc.start()
            assert _drain(store, config)
            outcome = check_server(store, clean_orthanc)
        _tally(totals, outcome, studies=4, instances=12)
    _report("orthanc_stopped", totals)
    assert totals["lost"] == totals["duplicated"] == totals["corrupt"] == 0


def test_proxy_500_hang_and_dropped_connections(tmp_path, clean_orthanc):
    totals = {"trials": 0, "studies": 0, "lost": 0, "duplicated": 0, "corrupt": 0}
    faults = {}
    for trial in range(TRIALS):
        clean_orthanc.clear()
        proxy = FaultyProxy(clean_orthanc.port, seed=trial)
        try:
            url = f"http://127.0.0.1:{proxy.port}/dicom-web"
            config = _config(tmp_path / f"t{trial}", url, dicomweb={"timeout_s": 0.5})
            with Store(config) as store:
                for seed in range(3):
                    add_study(store, trial * 10 + seed, f"P{seed}", "L")
                assert _drain(store, config, max_passes=200)
                outcome = check_server(store, clean_orthanc)
        finally:
            proxy.close()
        for fault, count in proxy.counts.items():
            faults[fault] = faults.get(fault, 0) + count
        _tally(totals, outcome, studies=3, instances=9)
    _report("proxy", {**totals, **{f"requests_{k}": v for k, v in faults.items()}})
    assert faults["drop_answer"] > 0 and faults["hang"] > 0 and faults["error500"] > 0 and faults["drop_upload"] > 0
    assert totals["lost"] == totals["duplicated"] == totals["corrupt"] == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs (root only); skipped elsewhere, as ENOSPC cannot be produced honestly."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode(errors='replace').strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path, leave_bytes: int) -> Path:
    """Fill the file system until about ``leave_bytes`` remain free."""
    filler = mount / "filler"
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_bytes))
    return filler


def test_disk_full(small_disk, clean_orthanc):
    rng = random.Random(4)
    totals = {"trials": 0, "studies": 0, "refused_by_guard": 0, "enospc_mid_write": 0, "lost": 0, "duplicated": 0,
              "corrupt": 0}
    for trial in range(TRIALS):
        clean_orthanc.clear()
        data = small_disk / f"t{trial}"
        # Guard off (factor 0, no reserve) so that writes really run into ENOSPC at random points.
        config = _config(data, clean_orthanc.dicomweb, data={"min_free_mb": 0, "study_space_factor": 0.0})
        with Store(config) as store:
            add_study(store, trial * 100, "P0", "L", h=240, w=320)
            filler = _fill(small_disk, rng.randint(50_000, 900_000))
            seed = trial * 100 + 1
            while True:
                try:
                    add_study(store, seed, "P", "L", h=240, w=320)
                    seed += 1
                except StoreError as exc:
                    assert "full" in str(exc) or "cannot be written" in str(exc), exc
                    totals["enospc_mid_write"] += 1
                    break
                assert seed < trial * 100 + 200
            # The guard (on again) refuses the next study before writing a byte.
            guarded = config.replace(data={"min_free_mb": 1, "study_space_factor": 4.0})
            rows_before = len(store.worklist(limit=10_000))
        with Store(guarded) as store:  # opening sweeps the files of the study that hit ENOSPC
            _check_local(store)
            files_before = sorted(p for p in data.rglob("*") if p.is_file() and not p.name.startswith("glanceseg.db"))
            assert len([p for p in files_before if p.parent.parent.name == "studies"]) == 3 * rows_before
            with pytest.raises(StoreError, match="Not enough free space"):
                add_study(store, 999, "P", "L", h=240, w=320)
            totals["refused_by_guard"] += 1
            assert sorted(p for p in data.rglob("*") if p.is_file() and not p.name.startswith("glanceseg.db")) == \
                files_before
            assert len(store.worklist(limit=10_000)) == rows_before
        filler.unlink()
        config = _config(data, clean_orthanc.dicomweb)
        with Store(config) as store:
            n = _check_local(store)
            assert _drain(store, config)
            outcome = check_server(store, clean_orthanc)
        _tally(totals, outcome, studies=n, instances=3 * n)
        for p in data.rglob("*"):
            if p.is_file():
                p.unlink()
    _report("disk_full", totals)
    assert totals["lost"] == totals["duplicated"] == totals["corrupt"] == 0
