"""Freed heap goes back to the system after a burst (glibc's malloc_trim)."""

from __future__ import annotations

import sys
import time

import pytest

from appliance.glance.heap import release_free_heap


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux-only here")
def test_a_burst_of_freed_blocks_is_returned_after_the_trim():
    # 64 KiB blocks come from malloc's heap (below its mmap threshold); a small block kept
    # after each one leaves every freed block a hole inside the heap that malloc cannot
    # give back by shrinking the heap's top: ~120 MB free but resident until trimmed.
    pairs = [(bytearray(64 * 1024), bytearray(2048)) for _ in range(1920)]
    for block, _ in pairs:
        block[::4096] = b"\1" * len(block[::4096])  # touch every page
    keep = [small for _, small in pairs]
    before = _rss_mb()
    del pairs
    time.sleep(0.2)
    kept = _rss_mb()
    assert release_free_heap() is True
    after = _rss_mb()
    assert before - kept < 40, "freeing alone should not return the holes"
    assert kept - after > 80, f"the trim returned only {kept - after:.0f} MB"
    assert len(keep) == 1920
