"""Signed model updates: from a USB stick or the clinic's update server into ``<data_dir>/models``.

A model bundle carries the files of one model folder (``manifest.json`` plus its ONNX files,
exactly what ``models/`` holds in the repository) under the signed ``bundle.json``. It is
installed into ``<data_dir>/models/<version>/`` and made active by switching the symlink
``<data_dir>/models/current``, which ``appliance.glance.modelfiles`` loads in preference to
the shipped ``models/`` folder. The previous version is kept for rollback. See
:mod:`appliance.sync.versions` for why a power cut at any point leaves a working model.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import tarfile
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urljoin, urlparse

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.config import Config
from appliance.errors import UpdateError
from appliance.sync.bundles import (BUNDLE_MANIFEST, BUNDLE_SUFFIX, MAX_BUNDLE_BYTES, BundleInfo,
                                    BundleKind, fingerprint, is_dev_key, load_public_key, version_key)
from appliance.sync.dicomweb import is_loopback
from appliance.sync.versions import DOWNLOADS, VersionedStore

logger = logging.getLogger(__name__)

MODEL_MANIFEST = "manifest.json"
#: The ``user:password@`` of a URL (an update server behind basic auth has its credentials there).
_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]*@")


class ModelUpdates(VersionedStore):
    """The installed models of one family under ``<data_dir>/models``."""

    def prepare(self, staging: Path, info: BundleInfo) -> None:
        """Refuse a model bundle whose model folder the runtime would not load as this family.

        Why: a signed bundle that the runtime cannot read (a release-manager slip) would go
        live and leave the engine without a model until someone rolls back. The staged
        ``manifest.json`` is read with the runtime's own loader, must name this family, list
        an encoder and a decoder, and list only files the signed bundle carries with the same
        sha256 and size.

        Raises
        ------
        UpdateError
            If any of that does not hold.
        """
        from appliance.errors import ModelError
        from appliance.glance.modelfiles import ROLES, load_model_files

        if MODEL_MANIFEST not in info.files:
            raise UpdateError(f"A model bundle must carry {MODEL_MANIFEST}.")
        try:
            model = load_model_files(staging)
        except ModelError as exc:
            raise UpdateError(f"The bundle's model folder cannot be loaded: {exc}") from exc
        if not isinstance(model.manifest, dict):
            raise UpdateError(f"The bundle's {MODEL_MANIFEST} is not a JSON object.")
        if model.name != self.family:
            raise UpdateError(f"The bundle's model manifest names {model.name!r}, not {self.family!r}.")
        items = model.manifest["files"]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise UpdateError(f"The bundle's {MODEL_MANIFEST} 'files' is not a list of entries.")
        for item in items:
            entry = info.files.get(str(item.get("file")))
            if (entry is None or item.get("sha256") != entry.sha256 or item.get("bytes") != entry.size
                    or item.get("role") not in ROLES or not item.get("variant")):
                raise UpdateError(f"The model manifest lists {item.get('file')!r}, which the bundle does not "
                                  "carry with that sha256 and size (or the entry lacks role or variant).")
        missing = [r for r in ROLES if not any(i.get("role") == r for i in items)]
        if missing:
            raise UpdateError(f"The bundle's model manifest lists no {', '.join(missing)}.")


def shipped_model_version(config: Config) -> str:
    """Return the version of the model shipped in ``config.model.dir`` ("0" when unversioned)."""
    try:
        manifest = json.loads((Path(config.model.dir) / MODEL_MANIFEST).read_text())
        version = str(manifest.get("version", "0"))
        version_key(version)
        return version
    except (OSError, ValueError, AttributeError, UpdateError):
        return "0"


def model_store(config: Config) -> ModelUpdates:
    """Build the model store of this appliance from its configuration.

    Raises
    ------
    UpdateError
        If no usable update public key is configured.
    """
    return ModelUpdates(config.data_dir / "models", update_public_key(config),
                        BundleKind.MODEL, config.model.name, shipped_model_version(config),
                        allow_dev_key=config.updates.allow_dev_key)


def update_public_key(config: Config) -> Ed25519PublicKey:
    """Load ``[updates] public_key``, warning when it is the published development key.

    The key itself is compared with the development key (a copy elsewhere is caught too);
    installing with it is refused by the store unless ``[updates] allow_dev_key``.
    """
    key = load_public_key(config.updates.public_key)
    if is_dev_key(key):
        logger.warning("updates are verified with the DEVELOPMENT key (fingerprint %s), whose private "
                       "half is public; installs are %s; set [updates] public_key on clinic devices",
                       fingerprint(key), "allowed ([updates] allow_dev_key)" if config.updates.allow_dev_key
                       else "refused")
    return key


def peek_bundle(source: Path) -> Optional[dict[str, Any]]:
    """Read a bundle's unverified manifest (to choose among bundles on a stick), or None.

    Nothing read here is trusted: the chosen bundle is fully verified by ``install``.
    """
    try:
        if source.is_dir():
            data = (source / BUNDLE_MANIFEST).read_bytes()
        else:
            with tarfile.open(source, "r:") as tar:
                member = tar.extractfile(BUNDLE_MANIFEST)
                data = member.read(1 << 20) if member else b""
        raw = json.loads(data)
        return raw if isinstance(raw, dict) else None
    except (OSError, KeyError, ValueError, tarfile.TarError):
        return None


def newest_bundle(folder: Path, store: VersionedStore) -> Optional[Path]:
    """Return the newest bundle in ``folder`` (a USB stick) for ``store`` newer than what runs."""
    running = version_key(store.current_version() or store.baseline_version)
    best: Optional[tuple[tuple[int, ...], Path]] = None
    for path in sorted(Path(folder).iterdir()):
        if not (path.suffix == BUNDLE_SUFFIX or (path / BUNDLE_MANIFEST).is_file()):
            continue
        raw = peek_bundle(path)
        if not raw or raw.get("kind") != store.kind.value or raw.get("family") != store.family:
            continue
        try:
            key = version_key(str(raw.get("version")))
        except UpdateError:
            continue
        if key > running and (best is None or key > best[0]) and not store.unwanted(str(raw.get("version"))):
            best = (key, path)
    return best[1] if best else None


def _check_url(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "https":
        return
    if parsed.scheme != "http" or not is_loopback(parsed.hostname or ""):
        raise UpdateError(f"The update server {url!r} must use https (plain http only on loopback).")


def _without_credentials(text: str) -> str:
    """``text`` with every URL's ``user:password@`` removed."""
    return _URL_CREDENTIALS.sub(r"\1", text)


def download_newest(config: Config, store: VersionedStore) -> Optional[Path]:
    """Download the newest bundle for ``store`` from ``[updates] server_url``, or None.

    Why the wrapper: the URL, with any credentials in it, is in every refusal (and in
    requests' own messages: "401 Client Error ... for url: https://user:password@..."), which
    ``serve`` logs every ``check_interval_s`` and the CLI prints; the credentials are removed.
    """
    try:
        return _download_newest(config, store)
    except UpdateError as exc:
        raise UpdateError(_without_credentials(str(exc))) from None


def _download_newest(config: Config, store: VersionedStore) -> Optional[Path]:
    """Download the newest bundle for ``store`` from ``[updates] server_url``, or None.

    The server serves ``index.json``: ``{"bundles": [{"kind", "family", "version", "file"}]}``
    with ``file`` relative to the index. The index is not trusted (the bundle is signed). The
    download lands in ``<root>/.downloads``, which a power cut leaves to :meth:`recover`.

    Raises
    ------
    UpdateError
        If the server is not configured, not https, unreachable, or sends a bad index.
    """
    import requests  # only on the network path

    base = config.updates.server_url.rstrip("/") + "/"
    if base == "/":
        raise UpdateError("No update server is configured ([updates] server_url).")
    _check_url(base)
    verify: Any = config.updates.ca or True
    try:
        resp = requests.get(urljoin(base, "index.json"), timeout=config.updates.timeout_s, verify=verify)
        resp.raise_for_status()
        _check_url(resp.url)
        entries = resp.json().get("bundles", [])
    except (requests.RequestException, ValueError, AttributeError) as exc:
        raise UpdateError(f"Cannot read the update index from {base}: {exc}.") from exc
    running = version_key(store.current_version() or store.baseline_version)
    best = None
    for entry in entries if isinstance(entries, list) else []:
        try:
            if entry["kind"] == store.kind.value and entry["family"] == store.family:
                key = version_key(str(entry["version"]))
                if key > running and (best is None or key > best[0]) and not store.unwanted(str(entry["version"])):
                    best = (key, str(entry["file"]))
        except (KeyError, TypeError, UpdateError):
            continue
    if best is None:
        logger.info("no newer %s bundle on %s", store.kind.value, _without_credentials(base))
        return None
    url = urljoin(base, best[1])
    _check_url(url)
    store.root.mkdir(parents=True, exist_ok=True)
    dest_dir = store.root / DOWNLOADS
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{secrets.token_hex(8)}{BUNDLE_SUFFIX}"
    try:
        with requests.get(url, stream=True, timeout=config.updates.timeout_s, verify=verify) as resp:
            resp.raise_for_status()
            _check_url(resp.url)  # where a redirect led must pass the same rule
            limit = MAX_BUNDLE_BYTES + (2 << 20)  # payload cap plus manifest and tar headers
            with open(dest, "wb") as fh:
                got = 0
                for chunk in resp.iter_content(1 << 20):
                    got += len(chunk)
                    if got > limit:  # why: a bad server must not fill the data folder
                        raise UpdateError(f"{url} is larger than any bundle may be ({limit} bytes).")
                    fh.write(chunk)
    except (requests.RequestException, OSError, UpdateError) as exc:
        dest.unlink(missing_ok=True)
        raise UpdateError(f"Downloading {url} failed: {exc}") from exc
    return dest


def install_from_server(config: Config, store: Optional[VersionedStore] = None) -> Optional[BundleInfo]:
    """Check the update server once and install the newest model bundle, if any.

    What the sync scheduler calls when online. Returns the installed manifest or None.
    Holds the store's lock from the clean-up through the download to the switch, so that a
    technician's install at the same moment neither deletes the download nor interleaves.
    """
    store = store or model_store(config)
    with store.locked():
        store.recover()
        path = download_newest(config, store)
        if path is None:
            return None
        try:
            return store.install(path)
        finally:
            path.unlink(missing_ok=True)
