"""What the UI and ``glanceseg tracker check`` show about the Companion device.

Kept apart from :mod:`appliance.gaze.neon` so the state can be read (and tested) without
the network code; it is updated from the client library's status components.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Optional

logger = logging.getLogger(__name__)


@dataclass
class NeonState:
    """Device health and stream counters; mutated only under the source's lock.

    Attributes
    ----------
    connected
        A session with a running gaze stream is up.
    battery_level, battery_state
        Phone battery in percent, and ``"OK"``/``"LOW"``/``"CRITICAL"``.
    memory_bytes, memory_state
        Free storage on the phone, and its state.
    clock_offset_ns
        Appliance clock minus Companion clock (added to device timestamps).
    samples, mapped, dropped, out_of_order
        Gaze data delivered, of which mapped onto the image, dropped because the consumer's
        queue was full, and discarded for a non-increasing device timestamp.
    stalls, reconnects
        Silent-stream detections and session restarts.
    scene_frames, scene_frames_skipped
        Scene frames decoded, and those skipped because marker detection was still busy.
    """

    connected: bool = False
    address: str = ""
    device_name: str = ""
    hardware_version: str = ""
    battery_level: Optional[int] = None
    battery_state: str = ""
    memory_bytes: Optional[int] = None
    memory_state: str = ""
    clock_offset_ns: int = 0
    clock_rtt_ms: Optional[float] = None
    recording_id: Optional[str] = None
    samples: int = 0
    mapped: int = 0
    dropped: int = 0
    out_of_order: int = 0
    stalls: int = 0
    reconnects: int = 0
    scene_frames: int = 0
    scene_frames_skipped: int = 0
    last_error: str = ""

    def apply(self, component: Any) -> None:
        """Update from one client-library status component (Phone, Hardware, Recording)."""
        name = type(component).__name__
        if name == "Phone":
            self.battery_level = int(component.battery_level)
            self.battery_state = str(component.battery_state)
            self.memory_bytes = int(component.memory)
            self.memory_state = str(component.memory_state)
            self.device_name = str(component.device_name)
        elif name == "Hardware":
            self.hardware_version = {"1": "Pupil Invisible", "2": "Neon"}.get(
                str(component.version), str(component.version))
        elif name == "Recording":
            action = str(component.action).upper()
            self.recording_id = component.id if action == "START" else None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly copy (no patient data is ever held here)."""
        return asdict(self)
