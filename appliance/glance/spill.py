"""Tile embeddings kept on disk, behind the predictor's small RAM cache.

Why: a pre-encoded photograph's embeddings are 574 MB even in float16 (287 tiles of 2 MiB
for the largest IDRiD one), more than half of the appliance's 1 GB memory budget (issue 8,
docs/performance.md). The decoder needs one tile at a time, and reading 2 MiB back (from
the page cache, or an NVMe) costs about a millisecond, against the half second encoding it
again would cost. The page cache is the kernel's to reclaim; the process's own memory stays
bounded by the RAM cache.

The files are derived data, never the only copy of anything: written to a temporary name
and renamed, so a reader sees a whole file or none; deleted when their photograph closes;
kept in a folder per store named after its process, and a folder whose process is gone (a
crash or a power cut) is removed by the next appliance to start. Each file holds its array
with its shape and dtype (``.npy``), so a short or damaged file is refused and encoded
again, never decoded.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Hashable, Optional

import numpy as np

logger = logging.getLogger(__name__)

#: how the folder of one store's files begins (then its process id)
_PREFIX = "pid-"

Key = tuple[Hashable, tuple[int, int]]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(root: Path) -> int:
    """Remove the folders of processes that are no longer running; return how many."""
    removed = 0
    for folder in root.glob(_PREFIX + "*"):
        pid = folder.name[len(_PREFIX):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


class EmbeddingSpill:
    """An LRU of at most ``capacity`` embeddings, one ``.npy`` file each, under ``root``.

    Parameters
    ----------
    root
        The spill folder (the appliance uses ``<data_dir>/cache/embeddings``); this
        store's files go in a new ``root/pid-<pid>-<random>``.
    capacity
        Most embeddings kept on disk (2 MiB each for LiteMedSAM in float16); the least
        recently used file goes first.
    min_free_bytes
        Free space the disk must keep after a write (``[data] min_free_mb``): photographs
        and results come first, an embedding can always be encoded again.

    Notes
    -----
    Thread-safe; the files are written and read outside the lock, and
    :class:`appliance.glance.predictor.SamPredictor` writes or reads a key from one thread
    at a time.
    """

    def __init__(self, root: Path, capacity: int, min_free_bytes: int = 0) -> None:
        if capacity < 1:
            raise ValueError("A spill must hold at least one embedding.")
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # embeddings are derived from patient photographs
        stale = remove_stale(self.root)
        if stale:
            logger.info("removed %d stale embedding folders under %s", stale, self.root)
        self.folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=self.root))
        self.capacity = int(capacity)
        self.min_free_bytes = int(min_free_bytes)
        self._files: "OrderedDict[Key, tuple[Path, int]]" = OrderedDict()  # path, bytes
        self._lock = threading.Lock()
        weakref.finalize(self, shutil.rmtree, self.folder, True)  # also at interpreter exit

    def _path(self, key: Key) -> Path:
        image = hashlib.sha256(repr(key[0]).encode()).hexdigest()[:24]
        row, col = key[1]
        return self.folder / image / f"{row}_{col}.npy"

    def __contains__(self, key: Key) -> bool:
        with self._lock:
            return key in self._files

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)

    @property
    def nbytes(self) -> int:
        """int: bytes of the files held."""
        with self._lock:
            return sum(size for _, size in self._files.values())

    def put(self, key: Key, emb: np.ndarray) -> None:
        """Write one embedding (whole or not at all), dropping the oldest beyond capacity.

        Raises
        ------
        OSError
            If the disk fails, or the write would leave less than ``min_free_bytes`` free.
        """
        free = shutil.disk_usage(self.folder).free
        if free - emb.nbytes < self.min_free_bytes:
            raise OSError(errno.ENOSPC, f"keeping an embedding would leave {free - emb.nbytes} bytes free, "
                                        f"below the {self.min_free_bytes} reserved for patient data")
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, emb, allow_pickle=False)
        os.replace(tmp, path)
        with self._lock:
            self._files[key] = (path, path.stat().st_size)
            self._files.move_to_end(key)
            old = [self._files.popitem(last=False)[1] for _ in range(len(self._files) - self.capacity)]
        for old_path, _ in old:
            old_path.unlink(missing_ok=True)

    def get(self, key: Key) -> Optional[np.ndarray]:
        """Read one embedding back, or None when it is not held or its file is damaged."""
        with self._lock:
            path, _ = self._files.get(key, (None, 0))
        if path is None:
            return None
        try:
            emb = np.load(path, allow_pickle=False)
        except FileNotFoundError:  # dropped for capacity meanwhile
            self.discard(key)
            return None
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("dropping damaged embedding file %s: %s", path, exc)
            self.discard(key)
            return None
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
        return emb

    def discard(self, key: Key) -> None:
        """Forget one embedding and delete its file."""
        with self._lock:
            path, _ = self._files.pop(key, (None, 0))
        if path is not None:
            path.unlink(missing_ok=True)

    def forget(self, image_key: Hashable) -> None:
        """Delete every file of one image."""
        with self._lock:
            keys = [k for k in self._files if k[0] == image_key]
        for key in keys:
            self.discard(key)

    def close(self) -> None:
        """Delete this store's folder and every file in it."""
        with self._lock:
            self._files.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
