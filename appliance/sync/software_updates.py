"""Signed software updates: a release bundle carrying one pure-Python wheel of ``glanceseg``.

Installed like a model (see :mod:`appliance.sync.versions`): the verified wheel is unpacked
into ``<data_dir>/software/<version>/_site`` and ``<data_dir>/software/current`` is switched
atomically. The systemd unit puts ``<data_dir>/software/current/_site`` first on
``PYTHONPATH``, so the next start of the service runs the new code, and ``rollback`` (or
deleting the ``current`` link) returns to the previous one or the base image's copy.
Third-party dependencies stay those of the base image: a release that needs new ones is a
base-image update, not a bundle.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import zipfile
from importlib import metadata
from importlib.machinery import PathFinder
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import appliance
from appliance.config import Config
from appliance.errors import UpdateError
from appliance.hashing import sha256_file
from appliance.store import db as store_db
from appliance.store.files import atomic_write, fsync_dir, fsync_file
from appliance.sync.bundles import BundleInfo, BundleKind, version_key
from appliance.sync.model_updates import update_public_key
from appliance.sync.versions import VersionedStore

logger = logging.getLogger(__name__)

SOFTWARE_FAMILY = "glanceseg"
SITE_DIR = "_site"
#: ``{relative path: sha256}`` of the unpacked tree, written with it: the code that runs is
#: checked like the signed files it came from (``software list --verify``, rollback).
SITE_HASHES = "_site.sha256.json"


class SoftwareUpdates(VersionedStore):
    """The installed releases of the appliance software under ``<data_dir>/software``.

    ``database`` is the appliance's SQLite file: a release is made current only if it knows
    every schema migration that file has applied. Migrations only go forward, and a release
    refuses a database a newer one wrote, so a rollback past a migration would leave a
    service that does not start (the UI, sync and the scan all open the database).
    """

    def __init__(self, *args: Any, database: Optional[Path] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.database = database

    def check_runnable(self, folder: Optional[Path], version: str) -> None:
        """Refuse a release (None: the base image's) that cannot open this appliance's database."""
        if self.database is None or not self.database.exists():
            return
        migrations = (self._baseline_migrations() if folder is None
                      else folder / SITE_DIR / "appliance" / "store" / "migrations")
        name = f"the base image's {version}" if folder is None else version
        if migrations is None:
            logger.warning("cannot find the migrations of %s; its database schema is not checked", name)
            return
        known = {m.version for m in store_db.discover_migrations(migrations)} if migrations.is_dir() else set()
        try:
            conn = store_db.connect(self.database)
            try:
                applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise UpdateError(f"The database cannot be read to check {name} against it: {exc}.") from exc
        newer = sorted(applied - known)
        if newer:
            raise UpdateError(
                f"{name} cannot open this appliance's database: a later release applied schema "
                f"version(s) {newer}, which {name} does not know, and migrations cannot be undone. "
                "Install a fixed newer release instead of rolling back.")

    def _baseline_migrations(self) -> Optional[Path]:
        """The migrations folder of the base image's copy of the package, or None if not found."""
        root = self.root.resolve()
        if not running_from(root):
            return store_db.MIGRATIONS_DIR  # the code running now is the base image's
        paths = [p for p in sys.path if p and not Path(p).resolve().is_relative_to(root)]
        spec = PathFinder.find_spec("appliance", paths)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0]) / "store" / "migrations"

    def prepare(self, staging: Path, info: BundleInfo) -> None:
        """Unpack the bundle's one wheel into ``_site``, refusing paths that leave it.

        Raises
        ------
        UpdateError
            If the bundle does not hold exactly one wheel of this family and version, the
            wheel is unreadable or holds unsafe paths, or its code cannot open the database.
        """
        wheels = [n for n in info.files if n.endswith(".whl")]
        if len(wheels) != 1:
            raise UpdateError("A software bundle must carry exactly one wheel.")
        dist, _, rest = wheels[0].partition("-")
        if dist.replace("_", "-").lower() != self.family or version_key(rest.split("-")[0]) != info.version_key:
            raise UpdateError(f"The wheel {wheels[0]} is not {self.family} {info.version}.")
        site = staging / SITE_DIR
        try:
            with zipfile.ZipFile(staging / wheels[0]) as wheel:
                for member in wheel.infolist():
                    parts = PurePosixPath(member.filename).parts
                    if member.filename.startswith("/") or ".." in parts or "\\" in member.filename:
                        raise UpdateError(f"The wheel holds an unsafe path {member.filename!r}.")
                wheel.extractall(site)
            hashes = {}
            for path in sorted(site.rglob("*")):
                if path.is_file():
                    hashes[path.relative_to(site).as_posix()] = sha256_file(path)
                    fsync_file(path)  # the switch must never expose empty .py files after a power cut
            for folder in sorted({site, *(p for p in site.rglob("*") if p.is_dir())}):
                fsync_dir(folder)
            atomic_write(staging / SITE_HASHES, json.dumps(hashes, sort_keys=True).encode())
        except (zipfile.BadZipFile, OSError) as exc:
            raise UpdateError(f"The wheel cannot be unpacked: {exc}.") from exc
        self.check_runnable(staging, info.version)

    def check_derived(self, folder: Path) -> None:
        """Check the unpacked ``_site`` against the hashes written when it was unpacked."""
        site = folder / SITE_DIR
        try:
            expected = json.loads((folder / SITE_HASHES).read_text())
        except (OSError, ValueError) as exc:
            raise UpdateError(f"{folder.name}: the record of its unpacked code is missing or unreadable.") from exc
        present = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()} if site.is_dir() else set()
        if present != set(expected):
            raise UpdateError(f"{folder.name}: its unpacked code has files added or missing.")
        for rel, sha in expected.items():
            if sha256_file(site / rel) != sha:
                raise UpdateError(f"{folder.name}: {rel} of its unpacked code was altered.")


def running_from(root: Path) -> bool:
    """Whether the ``appliance`` package running now was unpacked under ``root`` (an installed release)."""
    return Path(appliance.__file__).resolve().is_relative_to(Path(root).resolve())


def running_software_version() -> str:
    """Return the installed ``glanceseg`` distribution's version ("0" when unknown)."""
    try:
        version = metadata.version(SOFTWARE_FAMILY)
        version_key(version)
        return version
    except (metadata.PackageNotFoundError, UpdateError):
        return "0"


def software_store(config: Config) -> SoftwareUpdates:
    """Build the software store of this appliance from its configuration."""
    return SoftwareUpdates(config.data_dir / "software", update_public_key(config),
                           BundleKind.SOFTWARE, SOFTWARE_FAMILY, running_software_version(),
                           allow_dev_key=config.updates.allow_dev_key,
                           database=store_db.database_path(config.data_dir))

