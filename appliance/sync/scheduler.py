"""Automatic delivery in the background: a named thread that syncs whenever the server is reachable.

The thread wakes every ``[sync] interval_s`` seconds, or at once when :meth:`SyncScheduler.trigger`
is called (the UI's "Sync now", the hardware button). It probes the server with a cheap QIDO-RS
query first: offline for days, the station then costs one short request per interval and keeps
every item's backoff intact. A server that answers, even to say no (a refused password, an
untrusted certificate, a wrong DICOMweb root, a 5xx), is not offline: the pass runs and its
first item records why, where the Sync page and the LEDs show it. A triggered pass ignores
backoff timers, as a person asked for it now. After each pass it applies the retention policy. Listeners (the LEDs, the UI) get a
:class:`SyncIndicator` whenever the state changes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from appliance.config import Config
from appliance.errors import HardwareError, StoreError, SyncError
from appliance.store.retention import purge_expired
from appliance.store.store import Store
from appliance.sync.engine import PassReport, SyncBusy, Syncer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncIndicator:
    """What the LEDs and the UI show: a pass running, items waiting, and whether the last try failed."""

    syncing: bool
    pending: int
    error: bool
    reachable: Optional[bool]
    last_error: Optional[str]

    @property
    def state(self) -> str:
        """str: ``"syncing"``, ``"error"``, ``"pending"`` or ``"ready"`` (in that priority)."""
        if self.syncing:
            return "syncing"
        if self.error:
            return "error"
        return "pending" if self.pending else "ready"


class SyncScheduler:
    """Background sync thread (``glanceseg-sync``).

    Parameters
    ----------
    store, config
        The local store and configuration.
    syncer
        A ready :class:`Syncer` (tests); built from the config when None.
    """

    def __init__(self, store: Store, config: Config, syncer: Optional[Syncer] = None) -> None:
        self.store = store
        self.config = config
        self.syncer = syncer or Syncer(store, config)
        self.syncer.on_progress = self._on_progress
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._triggered = False
        self._listeners: list[Callable[[SyncIndicator], None]] = []
        # One notification at a time, each reading the state when its turn comes: the store's
        # threads and this one all notify, and two LED updates at once left the LEDs half one
        # state and half another (ready and pending lit together). Re-entrant: a listener may
        # change the store, which notifies again on the same thread.
        self._notify_lock = threading.RLock()
        self._syncing = False
        self._error = False
        self._reachable: Optional[bool] = None
        self._last_error: Optional[str] = None
        self._thread: Optional[threading.Thread] = None
        self.passes = 0
        self.last_report: Optional[PassReport] = None
        store.add_change_listener(self._notify)

    # -- control -------------------------------------------------------------------------
    def start(self) -> "SyncScheduler":
        """Start the thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="glanceseg-sync", daemon=True)
            self._thread.start()
            logger.info("sync scheduler started (every %.0f s)", self.config.sync.interval_s)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the thread to stop after its current pass and wait up to ``timeout_s``."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._thread = None
        panel = getattr(self, "panel", None)
        if panel is not None:
            panel.close()
            self.panel = None

    def trigger(self) -> None:
        """Start a pass now, ignoring backoff timers ("Sync now", the sync button)."""
        self._triggered = True
        self._wake.set()

    def add_listener(self, listener: Callable[[SyncIndicator], None]) -> None:
        """Call ``listener(indicator)`` on every change, and once now."""
        with self._notify_lock:
            self._listeners.append(listener)
            listener(self.indicator())

    def __enter__(self) -> "SyncScheduler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state ---------------------------------------------------------------------------
    def indicator(self) -> SyncIndicator:
        """Return the current indicator (reads the outbox counts)."""
        status = self.store.sync_status()
        return SyncIndicator(syncing=self._syncing, pending=status.pending + status.sending,
                             error=self._error, reachable=self._reachable, last_error=self._last_error)

    def _notify(self) -> None:
        with self._notify_lock:
            indicator = self.indicator()
            for listener in list(self._listeners):
                try:
                    listener(indicator)
                except Exception:  # noqa: BLE001 - a broken LED must never stop delivery
                    logger.exception("sync listener failed")

    def _on_progress(self, phase: str) -> None:
        self._syncing = phase == "syncing"
        self._notify()

    # -- the loop ------------------------------------------------------------------------
    def run_once(self, force: bool = False) -> Optional[PassReport]:
        """Probe, then make one pass if the server is reachable; return its report (None if offline)."""
        client = self.syncer.client
        self._reachable = client.reachable(self.config.dicomweb.probe_timeout_s)
        if not self._reachable:
            pending = self.store.sync_status().pending
            self._error = bool(force and pending)
            reason = client.unreachable_reason or "The DICOMweb server is unreachable."
            self._last_error = reason if pending else None
            self._notify()
            return None
        try:
            # Not waiting for the lock: when the timer's pass (or a technician's) holds it, that
            # pass is delivering; this one tries again at the next interval.
            report = self.syncer.run_pass(ignore_backoff=force, lock_timeout_s=0.0)
        except SyncBusy as exc:
            logger.info("%s", exc)
            self._error, self._last_error = False, None
            self._notify()
            return None
        except SyncError as exc:
            self._error, self._last_error = True, str(exc)
            self._notify()
            return None
        self.passes += 1
        self.last_report = report
        if report.delivered or report.already_there or report.failed or not report.remaining:
            # A pass that found every waiting item in its backoff tried nothing and learnt nothing:
            # the last attempt's outcome stands. Cleared here, a server refusing the password
            # showed "pending" most of the time and "error" (with a beep) whenever an item's
            # backoff ran out.
            self._error = report.failed > 0
            self._last_error = report.errors[-1] if report.errors else None
        try:
            purge_expired(self.store)
        except StoreError as exc:
            logger.warning("retention could not run: %s", exc)
        self._notify()
        return report

    def _run(self) -> None:
        while not self._stop.is_set():
            force, self._triggered = self._triggered, False
            try:
                self.run_once(force=force)
            except Exception:  # noqa: BLE001 - the thread must survive anything and retry later
                logger.exception("sync pass crashed; retrying at the next interval")
                self._error = True
            self._wake.wait(self.config.sync.interval_s)
            self._wake.clear()


def start_background_sync(store: Store, config: Config) -> Optional[SyncScheduler]:
    """Start automatic delivery for ``glanceseg serve``; None when no server is configured or
    ``[sync] enabled`` is false. With ``[hw] enabled`` the status panel is attached (button and LEDs).

    The caller keeps the returned scheduler, calls ``trigger()`` for "Sync now", reads
    ``indicator()`` for the sync status, and calls ``stop()`` at shutdown.

    Raises
    ------
    SyncError
        If the configured server URL breaks the transport rules (plain http off loopback).
    """
    if not config.sync.enabled or not config.dicomweb.url.strip():
        logger.info("automatic sync is off (no [dicomweb] url, or [sync] enabled = false)")
        return None
    return attach_panel(SyncScheduler(store, config), config).start()


def attach_panel(scheduler: SyncScheduler, config: Config) -> SyncScheduler:
    """Give ``scheduler`` the status panel (button and LEDs) when ``[hw] enabled``.

    A panel that cannot claim its pins (no Jetson.GPIO, a busy pin, ``/dev/gpiochip*`` not yet
    accessible at boot) is logged and left out: a status LED must never stop the reading
    station, and a service that exits would take the kiosk's screen down with it.
    """
    if not config.hw.enabled:
        return scheduler
    from appliance.hw.panel import StatusPanel, connect

    try:
        panel = StatusPanel(config.hw)
    except HardwareError as exc:
        logger.error("the status panel is unavailable (%s); running without its LEDs and button", exc)
        return scheduler
    connect(panel, scheduler)
    scheduler.panel = panel  # type: ignore[attr-defined]
    return scheduler


class OfflinePanel:
    """The status panel of a station with no DICOMweb server (delivery by USB export only).

    Why: the panel used to be built only with the sync scheduler, so on an outreach station
    with ``[hw] enabled`` and no server every LED stayed dark and the button did nothing,
    with no log line. Here the *ready* and *pending* LEDs follow the outbox (studies waiting
    for delivery, by ``glanceseg export-usb`` or a later network sync), and a press of the
    button says in the log why nothing is sent.
    """

    def __init__(self, store: Store, panel: Any) -> None:
        self.store = store
        self.panel = panel
        panel.set_on_sync(self._pressed)
        store.add_change_listener(self.show)
        self.show()

    def show(self) -> None:
        """Light the LEDs for what waits in the outbox."""
        if self.panel is None:
            return
        status = self.store.sync_status()
        self.panel.update(False, status.pending + status.sending, False)

    @staticmethod
    def _pressed() -> None:
        logger.warning("sync button pressed, but no DICOMweb server is configured ([dicomweb] url); "
                       "studies wait on the device until exported (glanceseg export-usb) or a server is set")

    def stop(self) -> None:
        """Switch the LEDs off and release the pins."""
        panel, self.panel = self.panel, None
        if panel is not None:
            panel.close()


def start_offline_panel(store: Store, config: Config) -> Optional[OfflinePanel]:
    """Build the status panel for a station without a sync scheduler (None when ``[hw]`` is off
    or the pins cannot be claimed: logged, never fatal, as in :func:`attach_panel`)."""
    if not config.hw.enabled:
        return None
    from appliance.hw.panel import StatusPanel

    try:
        return OfflinePanel(store, StatusPanel(config.hw))
    except HardwareError as exc:
        logger.error("the status panel is unavailable (%s); running without its LEDs and button", exc)
        return None
