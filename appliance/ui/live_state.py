"""What the running ``glanceseg serve`` knows and a separate ``glanceseg status`` cannot see.

Why: ``glanceseg status`` (what ``firmware_scripts/healthcheck`` reads) runs in a fresh process.
It cannot see whether the serving process holds the tracker's connection, nor which model its
engine loaded, so a Neon station read "not connected" forever and a model update read "restart
glanceseg" even after the restart. The serving process writes ``<data_dir>/live.json`` every
few seconds (atomically); ``status`` uses it while it is fresh and its writer alive, and says
"unknown" otherwise instead of guessing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

LIVE_STATE = "live.json"
#: Seconds between writes, and the age after which a state counts as stale (its writer hung).
PUBLISH_S = 10.0
MAX_AGE_S = 60.0


def write_live_state(data_dir: Path, doc: dict[str, Any]) -> None:
    """Replace ``<data_dir>/live.json`` with ``doc`` plus the writer's pid and the time."""
    path = Path(data_dir) / LIVE_STATE
    tmp = path.with_name(f".{LIVE_STATE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**doc, "pid": os.getpid(), "updated_unix": time.time()}))
    os.replace(tmp, path)


def read_live_state(data_dir: Path, max_age_s: float = MAX_AGE_S) -> Optional[dict[str, Any]]:
    """The serving process's state, or None when there is none, it is stale, or its writer is gone."""
    try:
        doc = json.loads((Path(data_dir) / LIVE_STATE).read_text())
        pid, updated = int(doc["pid"]), float(doc["updated_unix"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if abs(time.time() - updated) > max_age_s:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, owned by another user
        pass
    return doc


class LiveStatePublisher:
    """Writes ``live.json`` every :data:`PUBLISH_S` from a daemon thread; removes it on stop."""

    def __init__(self, data_dir: Path, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.data_dir = Path(data_dir)
        self.snapshot = snapshot
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-state", daemon=True)

    def start(self) -> "LiveStatePublisher":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                write_live_state(self.data_dir, self.snapshot())
            except Exception:  # noqa: BLE001 - monitoring must never stop the reading station
                logger.exception("could not publish the live state")
            self._stop.wait(PUBLISH_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        try:
            (self.data_dir / LIVE_STATE).unlink()
        except OSError:
            pass
