"""Durable file writes and the disk-space guard.

A file is written to a temporary name in its final folder, flushed and ``fsync``-ed, renamed
over its final name (atomic on POSIX), and then the folder itself is ``fsync``-ed so the rename
survives a power cut. Only after that does the store commit the row naming the file: a crash at
any point leaves either no row (an orphaned temporary file, swept on the next start) or a row
whose file is complete.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from appliance.errors import StoreError
from appliance.hashing import sha256_file  # noqa: F401  (re-exported for callers)

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".part"


def fsync_dir(directory: Path) -> None:
    """``fsync`` a folder so that entries created or renamed in it are durable."""
    fd = os.open(str(directory), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """``fsync`` a file written by someone else's code (an unpacked archive), so its bytes are durable."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(directory: Path) -> None:
    """Create ``directory`` (and parents) and ``fsync`` each new entry's parent."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        fsync_dir(d.parent)


def atomic_write(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically and durably.

    Returns
    -------
    str
        The hex sha256 of ``data``.

    Raises
    ------
    StoreError
        If the disk is full or the write fails; the final name is then untouched and the
        temporary file removed.
    """
    path = Path(path)
    makedirs_durable(path.parent)
    # Per process and thread: two threads writing one path (two requests for one photograph's
    # browser copy) must not write into the same temporary file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}{TMP_SUFFIX}")
    try:
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with _suppress_os():
            tmp.unlink()
        if exc.errno == errno.ENOSPC:
            raise StoreError(f"The disk is full: cannot write {path.name}.") from exc
        raise StoreError(f"Cannot write {path.name}: {exc.strerror or exc}.") from exc
    return hashlib.sha256(data).hexdigest()


def remove_durable(path: Path) -> None:
    """Delete a file (if present) and ``fsync`` its folder."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(Path(path).parent)


def remove_all_quietly(paths: Iterable[Path]) -> None:
    """Remove the files a failed write left behind (best effort, each :func:`remove_durable`).

    Called while the original error is propagating, so a failure here is logged, never raised
    in its place; whatever stays is removed by the next start's sweep.
    """
    for path in paths:
        try:
            remove_durable(path)
        except OSError as exc:
            logger.warning("could not remove %s after a failed write: %s", Path(path).name, exc.strerror or exc)


def sweep_temporaries(root: Path, min_age_s: float = 0.0) -> int:
    """Delete the temporary files a crash left under ``root``; return how many.

    With ``min_age_s``, only those last modified at least that long ago: for a folder where
    another process may be writing one right now without a lock the sweep can take.
    """
    count = 0
    if not root.exists():
        return 0
    now = time.time()
    for tmp in root.rglob(f"*{TMP_SUFFIX}"):
        with _suppress_os():
            if min_age_s > 0 and now - tmp.stat().st_mtime < min_age_s:
                continue
            tmp.unlink()
            count += 1
    if count:
        logger.info("removed %d temporary file(s) left by an interrupted write", count)
    return count


def free_bytes(directory: Path) -> int:
    """Return the bytes available to this process on ``directory``'s file system."""
    return shutil.disk_usage(str(directory)).free


#: What :func:`check_space` says by default: the operation is storing a new study.
STUDY_SPACE = ("store a new study", "Sync or export the delivered studies, or free space on the device, "
               "then try again. Nothing was stored.")


def check_space(directory: Path, needed_bytes: int, min_free_mb: int,
                context: tuple[str, str] = STUDY_SPACE) -> None:
    """Refuse an operation, before it writes anything, when space would run low.

    Parameters
    ----------
    context
        ``(what the space is for, what to do and what became of the operation)``: the message
        becomes the outbox's ``last_error`` and the UI's text, so it must name the operation that
        was refused (a sync build is not "a new study").

    Raises
    ------
    StoreError
        If fewer than ``needed_bytes`` plus ``min_free_mb`` MiB are free, with a message that says
        how much is free and what to do.
    """
    free = free_bytes(directory)
    required = int(needed_bytes) + int(min_free_mb) * (1 << 20)
    if free < required:
        purpose, advice = context
        raise StoreError(
            f"Not enough free space to {purpose}: {free / 2**20:.0f} MiB free, "
            f"{required / 2**20:.0f} MiB needed. {advice}"
        )


class _suppress_os:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:  # type: ignore[no-untyped-def]
        return exc_type is not None and issubclass(exc_type, OSError)


@contextlib.contextmanager
def exclusive_lock(path: Path, wait_s: float = 0.0, poll_s: float = 0.05, mode: int = 0o600) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` for the block; yield whether it was taken.

    Why flock: it serialises processes and threads alike (each opens its own descriptor), and
    the kernel drops it when a holder dies, so a killed process never blocks the next. Yields
    False, holding nothing, when another holder still has it after ``wait_s`` (0: do not wait).
    """
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    held = False
                    break
                time.sleep(poll_s)
        yield held
    finally:
        os.close(fd)  # releases the lock
