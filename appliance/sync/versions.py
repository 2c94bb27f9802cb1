"""Versioned folders switched by symlink: the atomic install and rollback of any bundle.

Layout under one root (``<data_dir>/models`` or ``<data_dir>/software``)::

    <root>/.lock                held (flock) by whoever installs, rolls back, prunes or recovers
    <root>/.downloads/          bundles being downloaded from the update server
    <root>/.incoming/<token>/   a bundle being received (never read by the runtime)
    <root>/<version>/           a verified, complete bundle (read-only from then on)
    <root>/current -> <version> what the runtime loads
    <root>/previous -> <version> what ``rollback`` returns to

Why this shape: the only step that changes what runs is ``rename(2)`` of a fresh symlink over
``current``, which POSIX makes atomic. A power cut at any earlier point leaves ``current``
where it was; a cut after it leaves the new, already verified folder. Half-received bundles
sit in ``.incoming`` and are deleted on the next start (:meth:`VersionedStore.recover`).

Why the lock: ``serve``'s background update check and a technician's ``glanceseg models install``
may run at the same moment. Without it one install's prune deletes the other's fresh folder
(``current`` then dangles) and one's recover deletes the other's ``.incoming``. Every change
under the root holds an exclusive ``flock`` on ``<root>/.lock``; the second comer waits a
moment, then is refused with an UpdateError and changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.errors import UpdateError
from appliance.store.files import atomic_write, exclusive_lock
from appliance.sync.bundles import (BundleInfo, BundleKind, fsync_dir, is_dev_key, remove_tree,
                                    stage_bundle, verify_folder, version_key)

logger = logging.getLogger(__name__)

CURRENT = "current"
PREVIOUS = "previous"
INCOMING = ".incoming"
DOWNLOADS = ".downloads"
LOCK = ".lock"
#: ``{"highest": version, "rolled_back": [versions]}``: what the updater must not bring back.
HISTORY = ".history.json"

#: Called with a step name between install steps; tests use it to cut power at each step.
StepHook = Callable[[str], None]


@dataclass(frozen=True)
class InstalledVersion:
    """One installed version folder.

    Attributes
    ----------
    version
        Dotted-integer version (the folder name).
    path
        The folder.
    active, previous
        Whether ``current`` / ``previous`` point at it.
    info
        Its verified manifest, or None when it no longer verifies.
    """

    version: str
    path: Path
    active: bool
    previous: bool
    info: Optional[BundleInfo]


class VersionedStore:
    """Install, switch and roll back signed bundles of one kind and family under ``root``.

    Parameters
    ----------
    root
        The folder holding the versions and the ``current`` / ``previous`` links.
    public_key
        The appliance's update key; every bundle must be signed by its private half.
    kind, family
        What this store accepts; anything else is refused.
    baseline_version
        The version running when nothing is installed yet (the shipped one); an update must
        be newer than it.
    allow_dev_key
        Whether ``install`` may proceed when ``public_key`` is the published development key
        (``[updates] allow_dev_key``); refused by default, since anyone can sign with it.
    """

    def __init__(self, root: Path, public_key: Ed25519PublicKey, kind: BundleKind, family: str,
                 baseline_version: str = "0", allow_dev_key: bool = False) -> None:
        self.root = Path(root)
        self.public_key = public_key
        self.allow_dev_key = allow_dev_key
        self.kind = BundleKind(kind)
        self.family = family
        self.baseline_version = baseline_version
        self._lock_state = threading.local()

    #: How long a second install waits for the first before it is refused (seconds).
    lock_wait_s: float = 5.0

    # --- lock --------------------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive lock on ``<root>/.lock`` (re-entrant within one thread).

        Why flock: it serialises threads (each takes its own open file) and processes alike,
        and the kernel drops it when a holder dies, so a killed install never blocks the next.

        Raises
        ------
        UpdateError
            If another install, rollback or recovery still holds it after ``lock_wait_s``.
        """
        state = self._lock_state
        if getattr(state, "depth", 0):
            state.depth += 1
            try:
                yield
            finally:
                state.depth -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.root / LOCK, self.lock_wait_s, mode=0o644) as held:
            if not held:
                raise UpdateError(f"Another install is running ({self.kind.value} updates under "
                                  f"{self.root}); try again when it has finished.")
            state.depth = 1
            try:
                yield
            finally:
                state.depth = 0

    # --- state -------------------------------------------------------------------------------

    def _link_target(self, name: str) -> Optional[str]:
        try:
            return os.readlink(self.root / name)
        except (FileNotFoundError, OSError):
            return None

    def current_version(self) -> Optional[str]:
        """Return the version ``current`` points at, or None when the shipped one runs."""
        return self._link_target(CURRENT)

    def previous_version(self) -> Optional[str]:
        """Return the version ``previous`` points at, or None."""
        return self._link_target(PREVIOUS)

    def current_path(self) -> Optional[Path]:
        """Return the folder of the active installed version, or None (shipped one runs)."""
        target = self.current_version()
        return (self.root / target) if target else None

    def list(self, check_hashes: bool = False) -> list[InstalledVersion]:
        """Return the installed versions, newest first (hashes checked only when asked)."""
        if not self.root.is_dir():
            return []
        cur, prev = self.current_version(), self.previous_version()
        out = []
        for path in self.root.iterdir():
            if path.is_symlink() or not path.is_dir() or path.name.startswith("."):
                continue
            try:
                version_key(path.name)
                info: Optional[BundleInfo] = verify_folder(path, self.public_key, check_hashes)
                if check_hashes:
                    self.check_derived(path)
            except UpdateError as exc:
                logger.warning("installed %s %s does not verify: %s", self.kind.value, path.name, exc)
                info = None
            out.append(InstalledVersion(path.name, path, path.name == cur, path.name == prev, info))
        return sorted(out, key=lambda v: _safe_key(v.version), reverse=True)

    def recover(self) -> None:
        """Delete what an interrupted download or install left behind (run at start, locked)."""
        with self.locked():
            remove_tree(self.root / DOWNLOADS)
            self._clean_incoming()

    def _clean_incoming(self) -> None:
        """Delete ``.incoming`` and stray link temporaries; only under :meth:`locked`, because
        outside it they may be another install's work in progress."""
        remove_tree(self.root / INCOMING)
        for path in self.root.glob(".*.tmp-*") if self.root.is_dir() else []:
            path.unlink()

    # --- install -----------------------------------------------------------------------------

    def check_derived(self, folder: Path) -> None:
        """Check the derived ``_*`` files :meth:`prepare` wrote (subclasses override).

        The signature covers the bundle's own files only, so a store that derives files (an
        unpacked wheel) must check them itself before trusting the folder.

        Raises
        ------
        UpdateError
            If a derived file is missing or altered.
        """

    def check_runnable(self, folder: Optional[Path], version: str) -> None:
        """Refuse to make ``version`` in ``folder`` (None: the shipped one) current when it cannot run here.

        Subclasses override; a rollback calls it before switching, so a version that would not
        start is refused while the running one still works.

        Raises
        ------
        UpdateError
            If that version cannot run on this appliance's data.
        """

    def prepare(self, staging: Path, info: BundleInfo) -> None:
        """Check and complete a verified bundle before it goes live (subclasses override).

        Raises UpdateError to refuse it. Derived files must be named ``_*``.
        """

    # --- what must not come back ---------------------------------------------------------

    def history(self) -> dict:
        """``highest``: the newest version ever installed; ``rolled_back``: versions left by a rollback.

        Why: a technician rolls back a model that misgrades; without this memory the next
        server check (or the same USB stick) reinstalls it within hours, and after a rollback
        to the shipped model any older signed release would be accepted again.
        """
        try:
            doc = json.loads((self.root / HISTORY).read_text())
            return {"highest": str(doc.get("highest") or ""), "rolled_back": [str(v) for v in doc.get("rolled_back", [])]}
        except (OSError, ValueError, AttributeError):
            return {"highest": "", "rolled_back": []}

    def _remember(self, installed: Optional[str] = None, rolled_back: Optional[str] = None) -> None:
        doc = self.history()
        if installed and (not doc["highest"] or _safe_key(installed) > _safe_key(doc["highest"])):
            doc["highest"] = installed
        if installed in doc["rolled_back"]:  # installed again on purpose (--force): wanted again
            doc["rolled_back"].remove(installed)
        if rolled_back and rolled_back not in doc["rolled_back"]:
            doc["rolled_back"].append(rolled_back)
        atomic_write(self.root / HISTORY, json.dumps(doc).encode())

    def unwanted(self, version: str) -> Optional[str]:
        """Why ``version`` must not be installed without ``force`` (None: it may be)."""
        doc = self.history()
        if version in doc["rolled_back"]:
            return f"version {version} was rolled back on this appliance"
        if doc["highest"] and _safe_key(version) < _safe_key(doc["highest"]):
            return f"version {version} is older than {doc['highest']}, installed here before"
        return None

    def install(self, source: Path, hook: Optional[StepHook] = None, force: bool = False) -> BundleInfo:
        """Verify a bundle (tar file or folder) and make it the active version.

        Parameters
        ----------
        source
            Bundle file or folder (USB stick, download).
        hook
            Called with the name of each completed step (tests only).
        force
            Install a version rolled back before, or older than one installed before (a
            technician's explicit decision; :meth:`unwanted`).

        Returns
        -------
        BundleInfo
            The installed bundle's manifest.

        Raises
        ------
        UpdateError
            If the signature or a hash does not verify, the kind or family is not this
            store's, the version is not newer than the running one, the copy fails,
            another install is running, or the key is the development key and
            ``allow_dev_key`` is off. The running version is untouched in every case.
        """
        if not self.allow_dev_key and is_dev_key(self.public_key):
            raise UpdateError("This appliance trusts the DEVELOPMENT update key, whose private half is "
                              "public, so it installs nothing. Set [updates] public_key to the production "
                              "key (or [updates] allow_dev_key = true on a development machine).")
        with self.locked():
            return self._install(source, hook, force)

    def _install(self, source: Path, hook: Optional[StepHook], force: bool = False) -> BundleInfo:
        step = hook or (lambda _name: None)
        self._clean_incoming()
        staging = self.root / INCOMING / secrets.token_hex(8)
        try:
            stage_bundle(source, staging, self.public_key)
            step("staged")
            info = verify_folder(staging, self.public_key)
            self._check_acceptable(info)
            why = None if force else self.unwanted(info.version)
            if why:
                raise UpdateError(f"Not installed: {why}. To install it all the same, use --force.")
            step("verified")
            self.prepare(staging, info)
            fsync_dir(staging)
            step("prepared")
            self._move_into_place(staging, info)
            step("moved")
        except BaseException:
            remove_tree(staging)
            raise
        old = self.current_version()
        if old and old != info.version:
            self._link(PREVIOUS, old)
        step("previous")
        self._link(CURRENT, info.version)
        self._remember(installed=info.version)
        logger.info("%s %s %s installed and active (was %s)", self.kind.value, self.family,
                    info.version, old or f"shipped {self.baseline_version}")
        step("switched")
        self.prune()
        self._clean_incoming()
        step("pruned")
        return info

    def _check_acceptable(self, info: BundleInfo) -> None:
        if info.kind != self.kind:
            raise UpdateError(f"This is a {info.kind.value} bundle, not a {self.kind.value} bundle.")
        if info.family != self.family:
            raise UpdateError(f"The bundle is for {info.family!r}, but this appliance runs {self.family!r}.")
        running = self.current_version() or self.baseline_version
        if info.version_key <= _safe_key(running):
            raise UpdateError(f"Version {info.version} is not newer than the running {running}; "
                              "downgrades are refused (use rollback).")

    def _move_into_place(self, staging: Path, info: BundleInfo) -> None:
        target = self.root / info.version
        if target.exists() or target.is_symlink():
            try:
                same = verify_folder(target, self.public_key).manifest_sha256 == info.manifest_sha256
            except UpdateError:
                same = False
            if same:  # e.g. the previous version, installed again after a rollback
                remove_tree(staging)
                return
            if info.version in (self.current_version(), self.previous_version()):
                raise UpdateError(f"A different bundle of version {info.version} is already installed.")
            logger.warning("removing a stale folder for %s %s", self.kind.value, info.version)
            remove_tree(target)
        os.rename(staging, target)
        fsync_dir(self.root)

    def _link(self, name: str, version: str) -> None:
        """Point ``root/name`` at ``version`` atomically (symlink, then rename over)."""
        tmp = self.root / f".{name}.tmp-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(version, tmp)
        os.replace(tmp, self.root / name)
        fsync_dir(self.root)

    def prune(self) -> None:
        """Delete installed versions other than ``current`` and ``previous`` (locked)."""
        with self.locked():
            keep = {self.current_version(), self.previous_version()}
            for path in self.root.iterdir():
                if path.name.startswith(".") or path.is_symlink() or path.name in keep:
                    continue
                if path.is_dir():
                    logger.info("pruning %s %s", self.kind.value, path.name)
                    remove_tree(path)

    # --- a newer shipped version -------------------------------------------------------------

    def retire_superseded(self) -> Optional[str]:
        """Stop using installed versions the shipped one has caught up with; return the retired one.

        Why: a base-image update (a re-flash that keeps the data partition) ships a version
        newer than, or equal to, the update installed before it, but ``current`` still points
        at the installed one, which would go on running, silently and older. ``current`` and
        ``previous`` links to such versions are removed and their folders pruned, so the
        shipped version runs; a rollback cannot bring them back either.

        Raises
        ------
        UpdateError
            If the shipped version cannot run here (:meth:`check_runnable`): then nothing changes.
        """
        with self.locked():
            shipped = _safe_key(self.baseline_version)
            cur, prev = self.current_version(), self.previous_version()
            retired = cur if cur and _safe_key(cur) <= shipped else None
            if retired:
                self.check_runnable(None, self.baseline_version)
                (self.root / CURRENT).unlink()
                logger.warning("%s %s %s is retired: the shipped version %s is as new or newer",
                               self.kind.value, self.family, retired, self.baseline_version)
            prev_retired = bool(prev) and _safe_key(prev) <= shipped
            if prev_retired:
                (self.root / PREVIOUS).unlink()
            if retired or prev_retired:
                fsync_dir(self.root)
                self.prune()
            return retired

    # --- rollback ----------------------------------------------------------------------------

    def rollback(self, hook: Optional[StepHook] = None) -> str:
        """Make ``previous`` active again (and the active one ``previous``); return its version.

        With no ``previous``, the first installed version is rolled back to the shipped model
        (``current`` removed) and the shipped version is returned.

        Raises
        ------
        UpdateError
            If there is nothing to roll back to, the previous folder no longer verifies, or
            another install is running.
        """
        with self.locked():
            return self._rollback(hook)

    def _rollback(self, hook: Optional[StepHook]) -> str:
        step = hook or (lambda _name: None)
        cur, prev = self.current_version(), self.previous_version()
        # The first installed version goes back to the shipped model. cur == prev is that same
        # rollback cut by a power loss after `previous` was linked: finish it, or it would
        # "roll back" to the same version forever.
        if cur and (not prev or prev == cur):
            self.check_runnable(None, self.baseline_version)
            self._remember(rolled_back=cur)
            self._link(PREVIOUS, cur)
            (self.root / CURRENT).unlink()
            fsync_dir(self.root)
            logger.info("%s %s rolled back from %s to the shipped %s", self.kind.value, self.family,
                        cur, self.baseline_version)
            return self.baseline_version
        if not prev or not (self.root / prev).is_dir():
            raise UpdateError("There is no previous version to roll back to.")
        info = verify_folder(self.root / prev, self.public_key)
        self.check_derived(self.root / prev)
        if info.kind != self.kind or info.family != self.family:
            raise UpdateError(f"The previous folder holds {info.kind.value} {info.family}, not this store's.")
        self.check_runnable(self.root / prev, prev)
        self._remember(installed=prev, rolled_back=cur)  # prev is wanted again, cur is not
        self._link(CURRENT, prev)
        step("switched")
        if cur:
            self._link(PREVIOUS, cur)
        logger.info("%s %s rolled back from %s to %s", self.kind.value, self.family, cur, prev)
        return prev


def _safe_key(version: str) -> tuple[int, ...]:
    try:
        return version_key(version)
    except UpdateError:
        return (0,)
