"""The status panel on gpiozero's MockFactory, and the Jetson adapter on a stand-in Jetson.GPIO."""

from __future__ import annotations

import threading
import time
import types

import pytest
from gpiozero import LED, Button
from gpiozero.pins.mock import MockFactory

from appliance.config import HwConfig
from appliance.errors import HardwareError
from appliance.hw.factory import build_pin_factory
from appliance.hw.jetson import JetsonFactory
from appliance.hw.panel import StatusPanel, connect

PINS = dict(enabled=True, sync_button_pin=17, led_ready_pin=5, led_syncing_pin=6, led_pending_pin=13,
            led_error_pin=19, buzzer_pin=26, button_bounce_s=0.0, blink_s=0.01, buzzer_beep_s=0.01)


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.close()


def _wait(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_leds_follow_the_state_and_error_beeps_once(factory):
    with StatusPanel(HwConfig(**PINS), pin_factory=factory) as panel:
        buzzer = factory.pin(26)
        panel.update(syncing=False, pending=0, error=False)
        assert [factory.pin(p).state for p in (5, 6, 13, 19)] == [True, False, False, False]
        panel.update(syncing=False, pending=3, error=False)
        assert [factory.pin(p).state for p in (5, 6, 13, 19)] == [False, False, True, False]
        buzzer.clear_states()
        panel.update(syncing=False, pending=3, error=True)
        assert factory.pin(19).state
        assert _wait(lambda: sum(1 for s in buzzer.states if s.state) >= 1)
        panel.update(syncing=False, pending=3, error=True)  # no change: no second beep
        time.sleep(0.05)
        assert sum(1 for s in buzzer.states if s.state) == 1
        panel.update(syncing=True, pending=3, error=False)
        syncing = factory.pin(6)
        assert _wait(lambda: sum(1 for s in syncing.states if s.state) >= 3)  # it blinks
        panel.update(syncing=False, pending=0, error=False)
        assert factory.pin(5).state and not factory.pin(6).state


def test_button_triggers_the_scheduler_and_absent_pins_are_skipped(factory):
    config = HwConfig(**{**PINS, "led_pending_pin": 0, "buzzer_pin": 0})

    class Scheduler:
        def __init__(self):
            self.triggered = threading.Event()
            self.listeners = []

        def trigger(self):
            self.triggered.set()

        def add_listener(self, listener):
            self.listeners.append(listener)

    scheduler = Scheduler()
    with StatusPanel(config, pin_factory=factory) as panel:
        assert panel.leds["pending"] is None and panel.buzzer is None
        connect(panel, scheduler)
        button = factory.pin(17)
        button.drive_low()
        assert scheduler.triggered.wait(5)
        button.drive_high()
        indicator = types.SimpleNamespace(syncing=False, pending=2, error=False)
        scheduler.listeners[0](indicator)
        assert not factory.pin(5).state


def test_pin_conflict_is_a_hardware_error(factory):
    with pytest.raises(HardwareError):
        StatusPanel(HwConfig(**{**PINS, "led_error_pin": 5}), pin_factory=factory)


def test_factory_names():
    assert build_pin_factory("") is None
    assert isinstance(build_pin_factory("mock"), MockFactory)
    with pytest.raises(HardwareError, match="Unknown pin factory"):
        build_pin_factory("arduino")
    with pytest.raises(HardwareError, match="Jetson.GPIO"):
        build_pin_factory("jetson")  # off a Jetson the library is absent or raises on import


class FakeJetsonGPIO:
    """Stands in for the Jetson.GPIO module (its public API), recording calls; a GPIO mock."""

    BCM, OUT, IN, HIGH, LOW = "BCM", "OUT", "IN", 1, 0
    PUD_UP, PUD_DOWN, PUD_OFF = "UP", "DOWN", "OFF"
    BOTH, RISING, FALLING = "BOTH", "RISING", "FALLING"

    def __init__(self):
        self.mode = None
        self.levels = {}
        self.setups = {}
        self.callbacks = {}

    def setwarnings(self, flag):
        pass

    def setmode(self, mode):
        self.mode = mode

    def setup(self, channel, direction, pull_up_down=None):
        self.setups[channel] = (direction, pull_up_down)
        if pull_up_down == self.PUD_UP:  # the (external) pull-up holds an open button high
            self.levels[channel] = 1
        self.levels.setdefault(channel, 0)

    def input(self, channel):
        return self.levels[channel]

    def output(self, channel, value):
        self.levels[channel] = value

    def add_event_detect(self, channel, edge, callback=None, bouncetime=None):
        self.callbacks[channel] = callback

    def remove_event_detect(self, channel):
        self.callbacks.pop(channel, None)

    def cleanup(self, channel=None):
        pass

    def press(self, channel, level):
        self.levels[channel] = level
        self.callbacks[channel](channel)


def test_jetson_adapter_drives_gpiozero_devices():
    gpio = FakeJetsonGPIO()
    factory = JetsonFactory(gpio=gpio)
    assert gpio.mode == "BCM"
    led = LED(5, pin_factory=factory)
    led.on()
    assert gpio.levels[5] == 1 and gpio.setups[5][0] == "OUT"
    led.off()
    assert gpio.levels[5] == 0
    pressed = threading.Event()
    button = Button(17, pin_factory=factory)
    assert gpio.setups[17] == ("IN", "UP")
    button.when_pressed = pressed.set
    gpio.press(17, 0)
    assert pressed.wait(5)
    with pytest.raises(Exception):
        LED(5, pin_factory=factory)  # pin already in use
    led.close()
    button.close()
    factory.close()


def test_a_press_read_mid_bounce_on_the_jetson_is_not_lost():
    # Jetson.GPIO calls back on the first edge and drops the following ones for `bouncetime`;
    # the level read in the callback can still be the contact bouncing back high.
    gpio = FakeJetsonGPIO()
    factory = JetsonFactory(gpio=gpio)
    presses, releases = threading.Semaphore(0), threading.Semaphore(0)
    button = Button(17, pin_factory=factory, bounce_time=0.05)
    button.when_pressed, button.when_released = presses.release, releases.release
    gpio.press(17, 1)      # the falling edge fired, but the contact reads high again...
    gpio.levels[17] = 0    # ...and settles low; its later edges were dropped by Jetson.GPIO
    assert presses.acquire(timeout=5)
    gpio.press(17, 0)      # the release's first edge read low (still bouncing)...
    gpio.levels[17] = 1    # ...settling high
    assert releases.acquire(timeout=5)
    gpio.press(17, 1)      # a second bounce after the release is not a second release
    gpio.press(17, 0)      # the next press
    assert presses.acquire(timeout=5)
    assert not releases.acquire(timeout=0.2) and not presses.acquire(timeout=0.2)
    button.close()
    factory.close()


def test_a_jetson_pin_whose_cleanup_fails_still_closes_and_says_why(caplog):
    # Jetson.GPIO raises on cleanup of a channel it never set up; closing goes on, but the
    # reason is logged rather than swallowed.
    class Refusing(FakeJetsonGPIO):
        def cleanup(self, channel=None):
            raise RuntimeError(f"channel {channel} was never set up")

    caplog.set_level("DEBUG", logger="appliance.hw.jetson")
    factory = JetsonFactory(gpio=Refusing())
    led = LED(5, pin_factory=factory)
    led.close()
    factory.close()
    assert led.closed
    assert "GPIO5 cleanup failed" in caplog.text and "never set up" in caplog.text
