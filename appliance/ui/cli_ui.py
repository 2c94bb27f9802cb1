"""``glanceseg serve`` and ``glanceseg status``: the CLI entries of the UI."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from appliance.config import Config

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add ``serve [--host H] [--port P] [--demo]`` and ``status [--json]``."""
    p = subparsers.add_parser("serve", help="start the touchscreen UI (default http://127.0.0.1:8080/)")
    p.add_argument("--host", default=None, help="listen address (non-loopback requires [ui] tls_cert/tls_key)")
    p.add_argument("--port", type=int, default=None, help="port (default 8080)")
    p.add_argument("--demo", action="store_true", help="throwaway data folder with sample photographs and a demo clinician")
    p.set_defaults(handler=run)
    s = subparsers.add_parser("status", help="print the device status the UI's Device and Sync pages show")
    s.add_argument("--json", action="store_true", help="one JSON object")
    s.set_defaults(handler=run_status)


def appliance_services(config: Config) -> Any:
    """The real services: the local store's outbox on the Sync page, and the sync scheduler
    (started only when a DICOMweb server is configured) behind "Sync now"."""
    from appliance.store.store import Store
    from appliance.ui.services import build_services

    store = Store(config)
    scheduler = None
    if config.dicomweb.url:
        from appliance.sync.scheduler import SyncScheduler

        scheduler = SyncScheduler(store, config).start()
    return build_services(config, store=store, scheduler=scheduler)


def run(args: argparse.Namespace, config: Config) -> int:
    """Serve until interrupted."""
    from appliance.ui.server import serve

    ui: dict[str, Any] = {}
    if args.host:
        ui["host"] = args.host
    if args.port is not None:
        ui["port"] = args.port
    serve(config.replace(ui=ui) if ui else config, demo=args.demo, services_factory=appliance_services)
    return 0


def run_status(args: argparse.Namespace, config: Config) -> int:
    """Print model, disk, tracker and sync status."""
    services = appliance_services(config)
    tracker = services.tracker_status()
    out = {"model": services.model_info(), "disk_free_mb": round(services.disk_free_mb(), 1),
           "tracker": {"kind": tracker.kind, "connected": tracker.connected},
           "sync": services.sync_status()}
    if args.json:
        print(json.dumps(out, default=str))
    else:
        print(f"model      {out['model']['name']} {out['model']['version']} sha256 {out['model']['sha256'][:16]}")
        print(f"disk free  {out['disk_free_mb']:.0f} MB")
        print(f"tracker    {tracker.kind} ({'connected' if tracker.connected else 'not connected'})")
        sync = out["sync"]
        print(f"sync       {sync['pending']} pending, last success {sync['last_success'] or 'never'}")
        for e in sync["errors"]:
            print(f"           {e}")
    return 0
