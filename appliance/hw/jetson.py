"""A gpiozero pin factory for NVIDIA Jetson boards, over ``Jetson.GPIO``.

gpiozero knows Raspberry Pi boards only. On a Jetson (Orin Nano / NX / AGX developer kits with the
40-pin header), NVIDIA's ``Jetson.GPIO`` library (``pip install Jetson.GPIO``; the user must be in
the ``gpio`` group, see firmware_scripts) drives the pins. This adapter lets gpiozero's Button, LED
and Buzzer run on it unchanged. Pins are **BCM numbers**, as in ``[hw]``: ``Jetson.GPIO`` maps BCM
numbers to the same physical header positions as on a Pi, so one wiring diagram serves both.

Limits: no PWM (LED brightness, PWMLED) and no internal pull-ups on most Jetson pins: wire the sync
button with an external pull-up resistor (10 kΩ to 3.3 V, button to GND). ``Jetson.GPIO`` raises on
import off a Jetson, so this module imports it only when the factory is built.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

from gpiozero.pins import Factory, Pin, PinInfo

from appliance.errors import HardwareError

logger = logging.getLogger(__name__)


def _bcm(spec: Any) -> int:
    text = str(spec).strip().upper()
    for prefix in ("GPIO", "BCM"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    try:
        return int(text)
    except ValueError as exc:
        raise HardwareError(f"{spec!r} is not a BCM pin number.") from exc


class JetsonPin(Pin):
    """One header pin driven through ``Jetson.GPIO`` (BCM numbering)."""

    def __init__(self, factory: "JetsonFactory", number: int) -> None:
        super().__init__()
        self._factory = factory
        self._gpio = factory.gpio
        self._number = number
        self._function = "input"
        self._pull = "floating"
        self._bounce: Optional[float] = None
        self._edges = "both"
        self._when_changed: Optional[Callable[[int, int], None]] = None
        self._report_lock = threading.Lock()
        self._reported: Optional[int] = None
        self._info = PinInfo(number=number, name=f"GPIO{number}", names=frozenset({number, str(number), f"GPIO{number}", f"BCM{number}"}),
                             pull="", row=0, col=0, interfaces=frozenset({"gpio"}))

    def __repr__(self) -> str:
        return f"JetsonPin(GPIO{self._number})"

    def close(self) -> None:
        self._set_when_changed(None)
        try:
            self._gpio.cleanup(self._number)
        except Exception as exc:  # noqa: BLE001 - a pin never set up; closing must go on
            logger.debug("GPIO%d cleanup failed: %r", self._number, exc)

    def _get_info(self) -> PinInfo:
        return self._info

    def _get_function(self) -> str:
        return self._function

    def _set_function(self, value: str) -> None:
        if value not in ("input", "output"):
            raise HardwareError(f"Jetson pins support input and output only, not {value!r}.")
        if value == "output":
            self._gpio.setup(self._number, self._gpio.OUT)
        else:
            pud = {"up": self._gpio.PUD_UP, "down": self._gpio.PUD_DOWN}.get(self._pull, self._gpio.PUD_OFF)
            self._gpio.setup(self._number, self._gpio.IN, pull_up_down=pud)
        self._function = value

    def _get_state(self) -> int:
        return int(self._gpio.input(self._number))

    def _set_state(self, value: Any) -> None:
        self._gpio.output(self._number, self._gpio.HIGH if value else self._gpio.LOW)

    def _get_pull(self) -> str:
        return self._pull

    def _set_pull(self, value: str) -> None:
        self._pull = value
        if self._function == "input":
            self._set_function("input")

    def _get_bounce(self) -> Optional[float]:
        return self._bounce

    def _set_bounce(self, value: Optional[float]) -> None:
        self._bounce = value

    def _get_edges(self) -> str:
        return self._edges

    def _set_edges(self, value: str) -> None:
        self._edges = value

    def _get_when_changed(self) -> Optional[Callable[[int, int], None]]:
        return self._when_changed

    def _set_when_changed(self, value: Optional[Callable[[int, int], None]]) -> None:
        if self._when_changed is not None:
            self._gpio.remove_event_detect(self._number)
        self._when_changed = value
        if value is not None:
            self._reported = self._get_state()
            edge = {"both": self._gpio.BOTH, "rising": self._gpio.RISING, "falling": self._gpio.FALLING}[self._edges]
            kwargs = {"bouncetime": int(self._bounce * 1000)} if self._bounce else {}
            self._gpio.add_event_detect(self._number, edge, callback=self._fire, **kwargs)

    def _fire(self, _channel: int) -> None:
        """Report the pin's level once it has settled, ``bounce`` seconds after the edge.

        Jetson.GPIO calls back on the first edge and drops the next ones for ``bouncetime``;
        the level read at that moment may still be a bounce (a press read as high), and with
        the following edges dropped gpiozero would never see the press. Reading after the
        bounce time gives the settled level; a level equal to the last one reported is not a
        change.
        """
        if self._bounce:
            timer = threading.Timer(self._bounce, self._settled)
            timer.daemon = True
            timer.start()
        else:
            self._settled()

    def _settled(self) -> None:
        callback = self._when_changed
        if callback is None:
            return
        with self._report_lock:
            state = self._get_state()
            if state == self._reported:
                return
            self._reported = state
        callback(self._factory.ticks(), state)


class JetsonFactory(Factory):
    """gpiozero pin factory over ``Jetson.GPIO`` in BCM mode.

    Parameters
    ----------
    gpio
        The ``Jetson.GPIO`` module (tests pass a stand-in); imported here when None.

    Raises
    ------
    HardwareError
        If ``Jetson.GPIO`` is not installed or this is not a Jetson.
    """

    def __init__(self, gpio: Any = None) -> None:
        super().__init__()
        if gpio is None:
            try:
                import Jetson.GPIO as gpio  # type: ignore[no-redef]
            except Exception as exc:  # noqa: BLE001 - it raises RuntimeError off a Jetson
                raise HardwareError(f"Jetson.GPIO is unavailable (not a Jetson, or not installed): {exc}.") from exc
        self.gpio = gpio
        self.gpio.setwarnings(False)
        self.gpio.setmode(self.gpio.BCM)
        self._pins: dict[int, JetsonPin] = {}
        self._reserved: dict[int, Any] = {}
        self._lock = threading.Lock()

    def pin(self, name: Any) -> JetsonPin:
        number = _bcm(name)
        with self._lock:
            if number not in self._pins:
                self._pins[number] = JetsonPin(self, number)
            return self._pins[number]

    def reserve_pins(self, requester: Any, *names: Any) -> None:
        from gpiozero.exc import GPIOPinInUse

        with self._lock:
            for name in names:
                number = _bcm(name)
                holder = self._reserved.get(number)
                if holder is not None and holder is not requester:
                    raise GPIOPinInUse(f"pin GPIO{number} is already in use by {holder!r}")
                self._reserved[number] = requester

    def release_pins(self, reserver: Any, *names: Any) -> None:
        with self._lock:
            for name in names:
                number = _bcm(name)
                if self._reserved.get(number) is reserver:
                    del self._reserved[number]

    def release_all(self, reserver: Any) -> None:
        with self._lock:
            for number in [n for n, r in self._reserved.items() if r is reserver]:
                del self._reserved[number]

    def close(self) -> None:
        for pin in list(self._pins.values()):
            pin.close()
        self._pins.clear()

    def ticks(self) -> float:
        return time.monotonic()

    def ticks_diff(self, later: float, earlier: float) -> float:
        return later - earlier

    def _get_board_info(self) -> Any:
        raise HardwareError("Board information is not available for Jetson boards.")
