"""Background model work runs at a lower CPU priority than the gaze path.

On a 2-core box the encoder (hundreds of ms a tile, on every core onnxruntime has) and the
saliency stage of a fixation compete for the same cores. The clinician waits for the
saliency stage (first lesions); pre-encoding and model refinement can wait. A flag between
tiles (:class:`appliance.glance.preencode.PreEncoder`'s ``busy``) cannot pre-empt a tile in
flight, so the kernel's scheduler does it: the threads that run the encoder get a higher
nice value.

On Linux the nice value belongs to a thread, and a thread inherits its creator's. So the
onnxruntime sessions are created from a lowered thread (their intra-op pools inherit it),
and the pre-encoder and refiner threads lower themselves. Elsewhere ``os.nice`` would
lower the whole process, so it is left alone there.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Callable, TypeVar

logger = logging.getLogger(__name__)

#: How much lower than the gaze path the model's threads run (0 normal, 19 lowest).
BACKGROUND_NICE = 10

T = TypeVar("T")


def lower_this_thread(increment: int = BACKGROUND_NICE) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.nice(increment)
    except OSError as exc:  # a sandbox may refuse; the work still runs, unprioritised
        logger.debug("could not lower thread priority: %s", exc)


def create_in_background(factory: Callable[[], T], increment: int = BACKGROUND_NICE) -> T:
    """Call ``factory`` in a lowered thread and return its result (or raise its error).

    Threads the factory starts, such as onnxruntime's intra-op pool, inherit the lowered
    priority.
    """
    box: dict[str, object] = {}

    def run() -> None:
        lower_this_thread(increment)
        try:
            box["value"] = factory()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="glance-model-init")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
