"""``glanceseg sync [--once] [--status]`` and ``glanceseg export-usb DEST``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from appliance.config import Config

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``sync`` and ``export-usb`` commands."""
    p = subparsers.add_parser("sync", help="deliver queued studies to the clinic's DICOMweb server")
    p.add_argument("--once", action="store_true",
                   help="one pass ignoring backoff; exit 0 only if everything queued was delivered and confirmed")
    p.add_argument("--status", action="store_true", help="print the outbox counts and exit")
    p.set_defaults(handler=run)
    p = subparsers.add_parser("export-usb", help="write undelivered studies as DICOM files plus a manifest to DEST")
    p.add_argument("dest", type=Path, help="a folder on the mounted USB drive")
    p.set_defaults(handler=run_export)


def run(args: argparse.Namespace, config: Config) -> int:
    """Run one pass (``--once``), print the status (``--status``), or sync until stopped."""
    from appliance.store.retention import purge_expired
    from appliance.store.store import Store
    from appliance.sync.engine import Syncer
    from appliance.sync.scheduler import SyncScheduler, attach_panel

    with Store(config) as store:
        if args.status:
            print(json.dumps(store.sync_status().__dict__, default=str))
            return 0
        syncer = Syncer(store, config)
        if args.once:
            report = syncer.run_pass(ignore_backoff=True)
            removed = purge_expired(store)
            status = store.sync_status()
            print(json.dumps({"delivered": report.delivered, "already_on_server": report.already_there,
                              "failed": report.failed, "remaining": status.pending + status.sending,
                              "photographs_removed_by_retention": removed,
                              "errors": sorted(set(report.errors))[:5]}))
            return 0 if report.all_delivered and status.pending + status.sending == 0 else 1
        scheduler = attach_panel(SyncScheduler(store, config, syncer), config)
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        with scheduler:
            scheduler.trigger()
            done.wait()
    return 0


def run_export(args: argparse.Namespace, config: Config) -> int:
    """Export undelivered instances to ``args.dest``; print where and how many.

    Exits 1 when some items could not be built and were left out (named on stdout and stderr):
    the export is then incomplete and whoever carries the drive must know.
    """
    from appliance.store.store import Store
    from appliance.sync.usb_export import export_undelivered

    with Store(config) as store:
        report = export_undelivered(store, args.dest)
    print(json.dumps({"folder": str(report.folder), "files": report.files, "studies": report.studies,
                      "bytes": report.bytes,
                      "skipped": [dataclasses.asdict(s) for s in report.skipped]}))
    if report.skipped:
        print(f"glanceseg: export-usb: {len(report.skipped)} item(s) could not be built and were NOT exported "
              "(they stay queued on the device; see skipped in the manifest):", file=sys.stderr)
        for s in report.skipped:
            print(f"  outbox item {s.outbox_seq} ({s.kind}, study {s.study_uid}): {s.reason}", file=sys.stderr)
        return 1
    return 0
