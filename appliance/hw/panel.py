"""The station's status panel: a sync button, four LEDs and an optional buzzer (gpiozero).

LEDs: *ready* (nothing waiting, no error), *syncing* (blinks while a pass runs), *pending* (studies
wait for delivery), *error* (the last attempt failed; the buzzer beeps once when the panel enters
this state). Any pin set to 0 in ``[hw]`` is absent. Pressing the button triggers a pass at once.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from appliance.config import HwConfig
from appliance.errors import HardwareError
from appliance.hw.factory import build_pin_factory

logger = logging.getLogger(__name__)


class StatusPanel:
    """Button, LEDs and buzzer of the station.

    Parameters
    ----------
    config
        ``[hw]``: pins (BCM, 0 = absent), pin factory, timings.
    on_sync
        Called (from gpiozero's thread) when the sync button is pressed.
    pin_factory
        A gpiozero pin factory (tests pass a MockFactory); built from ``config.pin_factory`` when None.

    Raises
    ------
    HardwareError
        If a pin cannot be claimed or the pin factory cannot start.
    """

    def __init__(self, config: HwConfig, on_sync: Optional[Callable[[], None]] = None, pin_factory: Any = None) -> None:
        from gpiozero import LED, Button, Buzzer
        from gpiozero.exc import GPIOZeroError

        self.config = config
        self.factory = pin_factory if pin_factory is not None else build_pin_factory(config.pin_factory)
        kw = {"pin_factory": self.factory} if self.factory is not None else {}
        self._state: Optional[tuple[bool, bool, bool, bool]] = None
        self._on_sync = on_sync
        try:
            self.button = Button(config.sync_button_pin, bounce_time=config.button_bounce_s, **kw) \
                if config.sync_button_pin else None
            self.leds = {
                name: LED(pin, **kw) if pin else None
                for name, pin in (("ready", config.led_ready_pin), ("syncing", config.led_syncing_pin),
                                  ("pending", config.led_pending_pin), ("error", config.led_error_pin))
            }
            self.buzzer = Buzzer(config.buzzer_pin, **kw) if config.buzzer_pin else None
        except (GPIOZeroError, OSError, RuntimeError) as exc:
            raise HardwareError(f"The status panel cannot claim its pins: {exc}.") from exc
        if self.button is not None:
            self.button.when_pressed = self._pressed

    def set_on_sync(self, callback: Optional[Callable[[], None]]) -> None:
        """Set what the sync button does."""
        self._on_sync = callback

    def _pressed(self) -> None:
        logger.info("sync button pressed")
        if self._on_sync is not None:
            self._on_sync()

    def update(self, syncing: bool, pending: int, error: bool) -> None:
        """Show the sync state on the LEDs (and beep on entering the error state)."""
        ready = not syncing and not pending and not error
        state = (ready, bool(syncing), bool(pending), bool(error))
        if state == self._state:
            return
        entering_error = error and not (self._state and self._state[3])
        self._state = state
        for name, on in zip(("ready", "syncing", "pending", "error"), state):
            led = self.leds[name]
            if led is None:
                continue
            if name == "syncing" and on:
                led.blink(on_time=self.config.blink_s, off_time=self.config.blink_s)
            elif on:
                led.on()
            else:
                led.off()
        if entering_error and self.buzzer is not None:
            self.buzzer.beep(on_time=self.config.buzzer_beep_s, off_time=self.config.buzzer_beep_s, n=1)

    def close(self) -> None:
        """Switch everything off and release the pins."""
        for device in [self.button, self.buzzer, *self.leds.values()]:
            if device is not None:
                device.close()

    def __enter__(self) -> "StatusPanel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(panel: StatusPanel, scheduler: Any) -> None:
    """Wire a panel to a sync scheduler: the button triggers a pass, the LEDs follow its indicator."""
    panel.set_on_sync(scheduler.trigger)
    scheduler.add_listener(lambda ind: panel.update(ind.syncing, ind.pending, ind.error))
