"""Companion recording hooks for research sessions: off unless ``[tracker] recording_enabled``.

Why off by default: the scene camera films the patient photographs on the screen, and
Companion recordings live on the phone and may be uploaded to Pupil Cloud. When a study
turns them on, the reader records each photograph it opens with the Neon as one recording
(:class:`appliance.ui.gaze_link.ReaderGaze`) and sends events (``image_shown``,
``image_closed``, lesion decisions) timestamped in the *device* clock, so the Companion's
export lines up with the appliance's own records. Event labels carry only a short appliance
record number, never a patient identifier.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Optional

from appliance.errors import GazeError
from appliance.gaze.neon import NeonGazeSource

logger = logging.getLogger(__name__)

RECORDING_EVENTS = ("image_shown", "image_closed", "lesion_accepted", "lesion_rejected", "lesion_added")
_EVENT_DETAIL = re.compile(r"^[A-Za-z0-9_.-]{0,40}$")


class NeonRecording:
    """Start/stop a Companion recording and send events through a running source.

    Parameters
    ----------
    source
        The connected :class:`NeonGazeSource`; its ``config.recording_enabled`` decides
        whether anything is sent at all.
    """

    def __init__(self, source: NeonGazeSource) -> None:
        self._source = source
        self.recording_id: Optional[str] = None

    @property
    def enabled(self) -> bool:
        """bool: whether ``[tracker] recording_enabled`` is on."""
        return bool(self._source.config.recording_enabled)

    def start(self) -> Optional[str]:
        """Start a recording; return its id, or None when recording is disabled.

        Raises
        ------
        GazeError
            If enabled but the device refuses (low battery or storage, one already running,
            required template fields) or is not connected.
        """
        if not self.enabled:
            logger.debug("Recording disabled in [tracker]; not starting one.")
            return None
        self.recording_id = self._source.run_on_device(lambda d: d.recording_start())
        logger.info("Companion recording started.")
        return self.recording_id

    def stop(self) -> None:
        """Stop and save the recording (no-op when disabled or none was started).

        Raises
        ------
        GazeError
            If the device refuses or does not answer.
        """
        if not self.enabled or self.recording_id is None:
            return
        self._source.run_on_device(lambda d: d.recording_stop_and_save())
        self.recording_id = None
        logger.info("Companion recording stopped and saved.")

    def event(self, name: str, detail: str = "", timestamp_ns: Optional[int] = None) -> bool:
        """Send one event to the recording.

        Parameters
        ----------
        name
            One of :data:`RECORDING_EVENTS`.
        detail
            A short token (an appliance record number), appended as ``name:detail``.
        timestamp_ns
            Appliance-clock time of the event (default: now); converted to the device clock
            with the time-echo offset.

        Returns
        -------
        bool
            True when the device confirmed it; False when disabled or it failed (logged),
            since a lost research event must never interrupt a clinical reading.

        Raises
        ------
        ValueError
            If the name is not a known event or the detail is not a short plain token.
        """
        if name not in RECORDING_EVENTS:
            raise ValueError(f"Unknown recording event {name!r}; expected one of {RECORDING_EVENTS}.")
        if not _EVENT_DETAIL.match(detail):
            raise ValueError("Event detail must be at most 40 letters, digits, '_', '.' or '-'.")
        if not self.enabled:
            return False
        ts = time.time_ns() if timestamp_ns is None else int(timestamp_ns)
        device_ts = ts - self._source.clock_offset_ns
        label = f"{name}:{detail}" if detail else name
        try:
            self._source.run_on_device(lambda d: d.send_event(label, event_timestamp_unix_ns=device_ts))
        except GazeError as exc:
            logger.warning("Event %s not delivered to the Companion: %s", name, exc)
            return False
        return True
