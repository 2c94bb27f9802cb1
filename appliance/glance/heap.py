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
import logging
import sys
from typing import Optional

logger = logging.getLogger(__name__)

_TRIM: Optional[object] = None
_LOADED = False


def _malloc_trim():
    global _TRIM, _LOADED
    if not _LOADED:
        _LOADED = True
        if sys.platform.startswith("linux"):
            try:
                _TRIM = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "malloc_trim", None)
            except OSError as exc:
                logger.debug("no C library to trim: %s", exc)
    return _TRIM


def release_free_heap() -> bool:
    """Return freed heap pages to the system; True when glibc's ``malloc_trim`` ran."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
