"""Station hardware: the sync button, status LEDs and buzzer (gpiozero), and systemd notification.

:mod:`panel` (StatusPanel, connect), :mod:`factory` (pin factory by name), :mod:`jetson` (gpiozero
pin factory over Jetson.GPIO), :mod:`sdnotify`. gpiozero and Jetson.GPIO are imported only when a
panel or factory is built.
"""

from appliance.hw.factory import build_pin_factory
from appliance.hw.panel import StatusPanel, connect

__all__ = ["StatusPanel", "connect", "build_pin_factory"]
