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

import logging
import zipfile
from importlib import metadata
from pathlib import Path, PurePosixPath

from appliance.config import Config
from appliance.errors import UpdateError
from appliance.sync.bundles import BundleInfo, BundleKind, version_key
from appliance.sync.model_updates import update_public_key
from appliance.sync.versions import VersionedStore

logger = logging.getLogger(__name__)

SOFTWARE_FAMILY = "glanceseg"
SITE_DIR = "_site"


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
        except (zipfile.BadZipFile, OSError) as exc:
            raise UpdateError(f"The wheel cannot be unpacked: {exc}.") from exc


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
