"""Choosing gpiozero's pin factory from ``[hw] pin_factory``.

``""`` leaves gpiozero's own choice (lgpio, RPi.GPIO, ... on a Raspberry Pi); ``"mock"`` is
gpiozero's MockFactory (tests, laptops); ``"jetson"`` is :class:`appliance.hw.jetson.JetsonFactory`,
a thin adapter over NVIDIA's ``Jetson.GPIO`` (gpiozero does not know Jetson boards); the names
``lgpio``, ``rpigpio``, ``pigpio`` and ``native`` select gpiozero's factories explicitly.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Optional

from appliance.errors import HardwareError

logger = logging.getLogger(__name__)

#: name → (module, class) of the factories gpiozero ships.
GPIOZERO_FACTORIES = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
    "mock": ("gpiozero.pins.mock", "MockFactory"),
}


def build_pin_factory(name: str) -> Optional[Any]:
    """Return a pin factory instance, or None for gpiozero's default.

    Raises
    ------
    HardwareError
        If the name is unknown or the factory cannot start on this machine.
    """
    name = (name or "").strip().lower()
    if not name:
        return None
    try:
        if name == "jetson":
            from appliance.hw.jetson import JetsonFactory

            return JetsonFactory()
        if name not in GPIOZERO_FACTORIES:
            raise HardwareError(f"Unknown pin factory {name!r}; use one of: jetson, {', '.join(GPIOZERO_FACTORIES)}.")
        module, cls = GPIOZERO_FACTORIES[name]
        return getattr(importlib.import_module(module), cls)()
    except HardwareError:
        raise
    except Exception as exc:  # noqa: BLE001 - GPIO libraries raise anything off their board
        raise HardwareError(f"The {name} pin factory cannot start here: {exc}.") from exc
