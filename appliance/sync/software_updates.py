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
import zipfile
from importlib import metadata
from pathlib import Path, PurePosixPath

from appliance.config import Config
from appliance.errors import UpdateError
from appliance.hashing import sha256_file
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
    """The installed releases of the appliance software under ``<data_dir>/software``."""

    def prepare(self, staging: Path, info: BundleInfo) -> None:
        """Unpack the bundle's one wheel into ``_site``, refusing paths that leave it.

        Raises
        ------
        UpdateError
            If the bundle does not hold exactly one wheel of this family and version, or the
            wheel is unreadable or holds unsafe paths.
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
                           allow_dev_key=config.updates.allow_dev_key)

