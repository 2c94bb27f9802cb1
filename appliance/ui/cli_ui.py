"""``glanceseg serve`` and ``glanceseg status``: the CLI entries of the UI."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Optional

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

    from appliance.errors import SyncError, UpdateError
    from appliance.store.files import makedirs_durable
    from appliance.sync.model_updates import model_store
    from appliance.sync.software_updates import software_store
    from appliance.sync.scheduler import start_background_sync, start_offline_panel
    from appliance.ui.sync_panel import store_sync_status

    # The data folder holds patient data: created owner-only before anything else makes it
    # (the update stores below would make it with the default umask, 0755).
    makedirs_durable(config.data_dir)
    models = model_store(config)
    for updates in (models, software_store(config)):
        try:
            updates.recover()  # delete what an interrupted download or install left behind
            if updates is models:
                # A newer base image's shipped model replaces an older installed one. (Software
                # is retired before this process starts, by the base image's code: the unit's
                # ExecStartPre runs `software reconcile`; here it may be the release running.)
                models.retire_superseded()
        except UpdateError as exc:  # e.g. a technician's install holds the lock right now
            logger.warning("%s update clean-up skipped: %s", updates.kind.value, exc)
    store = Store(config)
    overrides: dict[str, Any] = {}
    try:
        scheduler = start_background_sync(store, config)
    except SyncError as exc:
        # A [dicomweb] setting that breaks the transport rules (plain http off loopback) turns
        # sync off, not the reading station: raising here made `serve` exit, and systemd's
        # restarts kept the kiosk's screen down while the studies would only have queued anyway.
        logger.error("automatic sync is off: %s", exc)
        scheduler = None
        overrides["sync_status"] = store_sync_status(store, None, problem=str(exc))
    panel = start_offline_panel(store, config) if scheduler is None else None
    if config.updates.server_url:
        _start_update_checks(config)
    return build_services(config, store=store, scheduler=scheduler, panel=panel, **overrides)


def _start_update_checks(config: Config) -> None:
    """Check the clinic's update server for a newer signed model every ``check_interval_s``.

    A failed check (offline, refused bundle) is logged and retried at the next interval; an
    installed model is used from the next photograph the engine loads (``models/current``).
    """
    import threading

    from appliance.sync.model_updates import install_from_server

    def loop() -> None:
        while True:
            check_for_model_update(config, install_from_server)
            stop.wait(config.updates.check_interval_s)

    stop = threading.Event()
    threading.Thread(target=loop, name="model-updates", daemon=True).start()


def check_for_model_update(config: Config, install: Any) -> None:
    """One check of the update thread: ``install(config)``, logging whatever goes wrong.

    Why catch everything: an exception escaping here would end the update thread for good
    (until a restart) with nothing on the screen; a failed check is retried next interval.
    """
    from appliance.errors import ApplianceError

    try:
        installed = install(config)
        if installed is not None:
            logger.info("model update %s installed", installed.version)
    except ApplianceError as exc:
        logger.warning("model update check failed: %s", exc)
    except Exception:  # noqa: BLE001 - keep the thread alive, but keep the traceback
        logger.exception("model update check failed unexpectedly")


def run(args: argparse.Namespace, config: Config) -> int:
    """Serve until interrupted."""
    import os

    from appliance.hw.sdnotify import Notifier
    from appliance.ui.server import serve

    ui: dict[str, Any] = {}
    if args.host:
        ui["host"] = args.host
    if args.port is not None:
        ui["port"] = args.port
    # systemd's notify protocol is handed over in the environment ($NOTIFY_SOCKET, $WATCHDOG_USEC).
    serve(config.replace(ui=ui) if ui else config, demo=args.demo, services_factory=appliance_services,
          notifier=Notifier.from_environ(os.environ))
    return 0


def _unix(timestamp: Any) -> Any:
    """ISO-8601 text (the store's wall-clock stamps) → Unix seconds, None when absent."""
    from datetime import datetime

    if not timestamp:
        return None
    return round(datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp(), 1)


#: Gaze sources that need no tracker, whose state a fresh process knows as well as the app.
NO_TRACKER_SOURCES = ("pointer", "csv", "pupil_export", "simulated")


def status_document(config: Config) -> dict[str, Any]:
    """What ``glanceseg status --json`` prints; ``firmware_scripts/healthcheck`` reads these keys.

    Read-only: the store is opened but nothing is written, and no sync pass is started.
    """
    from importlib.metadata import PackageNotFoundError, version

    from appliance.store.store import Store
    from appliance.ui.services import build_services

    store = Store(config)
    try:
        services = build_services(config, store=store)
        sync = store.sync_status()
        pending = store.outbox(state="pending") + store.outbox(state="sending")
        from appliance.ui.live_state import read_live_state

        live = read_live_state(config.data_dir)  # None: no serving process (or a hung one)
        tracker = services.tracker_status()
        try:
            from appliance.glance.runtime.onnx import configured_providers

            providers = [name for name, _ in configured_providers(config.model)]
        except ImportError:
            providers = []
        model = {**services.model_info(), "providers": providers}
        model["trt_engines"] = _trt_engines(config, providers, model["sha256"])
        # sha256: what the running app loaded; installed_sha256: what a restart would load.
        model["installed_sha256"] = model["sha256"]
        if live is not None and live.get("model", {}).get("sha256"):
            model["sha256"] = live["model"]["sha256"]
        try:
            app_version = version("glanceseg")
        except PackageNotFoundError:
            app_version = "unknown"
        return {
            "version": app_version,
            "model": model,
            "disk_free_mb": round(services.disk_free_mb(), 1),
            "store": {"min_free_mb": config.data.min_free_mb, "data_dir": str(config.data_dir)},
            "app_running": live is not None,
            # A tracker's connection lives in the serving process: unknown (null) without one,
            # except for sources that need no tracker.
            "tracker": {"source": config.gaze.source, "kind": tracker.kind,
                        "connected": (live["tracker"]["connected"] if live is not None
                                      else tracker.connected if config.gaze.source in NO_TRACKER_SOURCES else None)},
            "sync": {
                "pending": sync.pending + sync.sending,
                "studies_pending": sync.studies_pending,
                "delivered": sync.delivered,
                "failed": sync.failing,
                "oldest_pending_unix": min((_unix(i.created_at) for i in pending), default=None),
                "last_success_unix": _unix(sync.last_delivered_at),
                "last_success": sync.last_delivered_at,
                "last_error": sync.last_error,
                "configured": bool(config.dicomweb.url),
            },
        }
    finally:
        store.close()


def _trt_engines(config: Config, providers: list[str], manifest_sha256: str) -> Optional[int]:
    """TensorRT engines cached for the active model, or None where TensorRT does not run it.

    Why: after a model update the engines are built at the first start, which takes minutes on
    a Jetson; ``healthcheck`` warns at 0 so a technician runs ``build-trt-engines`` first.
    """
    if "TensorrtExecutionProvider" not in providers or manifest_sha256 in ("", "missing"):
        return None
    from appliance.glance.runtime.onnx import engine_cache_dir

    return len(list(engine_cache_dir(config.model, manifest_sha256).glob("*.engine")))


def run_status(args: argparse.Namespace, config: Config) -> int:
    """Print model, disk, tracker and sync status."""
    out = status_document(config)
    if args.json:
        print(json.dumps(out, default=str))
    else:
        model, sync, tracker = out["model"], out["sync"], out["tracker"]
        print(f"glanceseg  {out['version']}")
        print(f"model      {model['name']} {model['version']} sha256 {model['sha256'][:16]} ({', '.join(model['providers'])})")
        if model["trt_engines"] is not None:
            print(f"           {model['trt_engines']} TensorRT engine(s) built for it"
                  + ("" if model["trt_engines"] else ": run firmware_scripts/build-trt-engines"))
        print(f"disk free  {out['disk_free_mb']:.0f} MB (new studies refused under {out['store']['min_free_mb']} MB)")
        print(f"tracker    {tracker['source']} ({'connected' if tracker['connected'] else 'not connected'})")
        print(f"sync       {sync['pending']} pending, {sync['failed']} failing, last success {sync['last_success'] or 'never'}")
        if sync["last_error"]:
            print(f"           last error: {sync['last_error']}")
    return 0
