"""One delivery pass over the outbox.

For each due item, in sequence order: build its file once (same bytes on every retry); ask the
server whether it already holds the instance (a previous pass may have delivered it and died before
recording that); otherwise claim it, send it by STOW-RS, and confirm it by QIDO-RS. Only a confirmed
instance is marked delivered. A failure returns the item to ``pending`` with its error and a
full-jitter exponential backoff (delay drawn uniformly from ``[0, min(max, base * 2**attempts)]``,
so a fleet of stations coming back online does not retry in lock step).

Exactly once on the server follows from the UIDs: they are fixed when the item is queued, and a
DICOM server keeps one instance per SOP Instance UID, so a re-sent item can never make a second copy.

Only one pass runs at a time per data folder (an ``flock`` on ``sync.lock``), across processes: the
UI's scheduler and a ``glanceseg sync`` from a shell never interleave.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from appliance.config import Config
from appliance.errors import StoreError, SyncError
from appliance.store import files
from appliance.store.store import SYNC_LOCK, Store
from appliance.sync.dicomweb import DicomwebClient, ServerUnavailable
from appliance.sync.instances import materialise

logger = logging.getLogger(__name__)


def backoff_delay_s(attempts: int, base_s: float, max_s: float, rng: Optional[random.Random] = None) -> float:
    """Return a full-jitter exponential backoff delay for the given number of failed attempts."""
    rng = rng or random
    ceiling = min(float(max_s), float(base_s) * (2 ** max(0, min(int(attempts), 62))))
    return rng.uniform(0.0, ceiling)


@dataclass
class PassReport:
    """What one pass did."""

    delivered: int = 0
    already_there: int = 0
    failed: int = 0
    skipped_backoff: int = 0
    remaining: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def all_delivered(self) -> bool:
        """bool: nothing is left undelivered."""
        return self.remaining == 0 and self.failed == 0


class SyncBusy(SyncError):
    """Another process's pass (the sync timer, a technician's ``sync --once``) holds the lock.

    Not a delivery failure: items are being delivered, by someone else.
    """


@contextlib.contextmanager
def sync_lock(store: Store, timeout_s: float) -> Iterator[None]:
    """Hold the data folder's sync lock (blocking up to ``timeout_s``).

    Raises
    ------
    SyncBusy
        If another pass holds it for longer than ``timeout_s``.
    """
    with files.exclusive_lock(store.root / SYNC_LOCK, timeout_s, poll_s=0.2) as held:
        if not held:
            raise SyncBusy("Another sync pass is running; try again when it has finished.")
        yield


class Syncer:
    """Delivers the outbox of one store to one DICOMweb server.

    Parameters
    ----------
    store
        The local store.
    config
        ``dicomweb`` and ``sync`` sections used.
    client
        A ready client (tests); built from the config when None.
    on_progress
        Called with ``"syncing"`` when a pass starts and ``"idle"`` when it ends (LEDs).
    """

    def __init__(self, store: Store, config: Config, client: Optional[DicomwebClient] = None,
                 on_progress: Optional[Callable[[str], None]] = None) -> None:
        self.store = store
        self.config = config
        self.client = client or DicomwebClient(config.dicomweb)
        self.on_progress = on_progress
        self.rng = random.Random()

    def run_pass(self, ignore_backoff: bool = False, lock_timeout_s: Optional[float] = None) -> PassReport:
        """Make one pass over the due items (all pending ones with ``ignore_backoff``).

        Returns
        -------
        PassReport
            Counts; ``remaining`` is what is still undelivered after the pass.
        """
        report = PassReport()
        timeout = self.config.sync.lock_timeout_s if lock_timeout_s is None else lock_timeout_s
        with sync_lock(self.store, timeout):
            self.store.reset_sending()
            sync = self.config.sync
            pending = self.store.outbox("pending")
            due = self.store.due_items(ignore_backoff=ignore_backoff, max_backoff_s=sync.backoff_max_s)
            report.skipped_backoff = len(pending) - len(due)
            if due and self.on_progress:
                self.on_progress("syncing")
            try:
                for item in due:
                    if not self._deliver_one(item.id, report):
                        break  # the server is unavailable: the rest would fail the same way
            finally:
                if self.on_progress:
                    self.on_progress("idle")
            report.remaining = len(self.store.outbox("pending")) + len(self.store.outbox("sending"))
        logger.info("sync pass: %d delivered, %d already on the server, %d failed, %d remaining",
                    report.delivered, report.already_there, report.failed, report.remaining)
        return report

    def _deliver_one(self, item_id: int, report: PassReport) -> bool:
        """Try one item; return False when the server is unavailable (stop the pass)."""
        item = self.store.get_item(item_id)
        if item.state != "pending":
            return True
        try:
            path, _sha = materialise(self.store, item)
            item = self.store.get_item(item_id)
            if not self.store.claim(item_id):
                return True
            if self.client.instance_exists(item.study_uid, item.series_uid, item.sop_uid):
                self._delivered(item_id, path)
                report.already_there += 1
                return True
            outcome = self.client.store(item.study_uid, item.sop_uid, path.read_bytes())
            if item.sop_uid in outcome.failed:
                raise SyncError(f"The server refused the instance (failure reason {outcome.failed[item.sop_uid]}).")
            if not self.client.instance_exists(item.study_uid, item.series_uid, item.sop_uid):
                raise SyncError("The server accepted the upload but does not list the instance.")
            self._delivered(item_id, path)
            report.delivered += 1
            return True
        except (SyncError, StoreError, OSError) as exc:
            attempts = self.store.get_item(item_id).attempts
            delay = backoff_delay_s(attempts, self.config.sync.backoff_base_s, self.config.sync.backoff_max_s, self.rng)
            asked = getattr(exc, "retry_after_s", None)
            if asked is not None:  # a busy server's own wait, within the longest backoff
                delay = max(delay, min(asked, self.config.sync.backoff_max_s))
            self.store.record_failure(item_id, str(exc), time.time() + delay)
            report.failed += 1
            report.errors.append(str(exc))
            logger.warning("outbox item %d not delivered (attempt %d): %s; next try in %.0f s",
                           item_id, attempts, exc, delay)
            return not isinstance(exc, ServerUnavailable)

    def _delivered(self, item_id: int, path) -> None:  # type: ignore[no-untyped-def]
        self.store.record_delivered(item_id)
        # The built file is a copy; the store keeps the photograph itself until retention.
        files.remove_durable(path)
