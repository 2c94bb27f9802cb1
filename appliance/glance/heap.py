"""Hand freed heap memory back to the system after a burst of large temporary arrays.

Why: a whole-photograph detection pass allocates a few hundred MB of temporary numpy and
OpenCV buffers, and a pre-encoding run a few hundred more inside onnxruntime. glibc keeps
freed memory in its arenas (one per thread that allocated), so without a trim the process
stays near the burst's high-water mark and the next burst stacks on top of what was left
(docs/performance.md: the scan after pre-encoding peaked 224 MB above the pre-encoding
stage). ``malloc_trim(0)`` returns the free pages of every arena. On other C libraries
(musl, macOS) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys
from typing import Callable, Optional

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's ``malloc_trim``, looked up once; None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "malloc_trim", None)
    except OSError as exc:
        logger.debug("no C library to trim: %s", exc)
        return None


def release_free_heap() -> bool:
    """Return freed heap pages to the system; True when glibc's ``malloc_trim`` ran."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
