"""Signed update bundles: the one format for model and software updates.

A bundle is a flat set of files plus two more:

- ``bundle.json``: ``{"format": 1, "kind": "model"|"software", "family", "version",
  "created_utc", "files": {name: {"sha256", "size"}}, "metadata": {...}}``, written as
  canonical JSON (sorted keys, no spaces) so that its bytes are what is signed;
- ``bundle.sig``: the raw 64-byte Ed25519 signature of those bytes.

On disk or on a USB stick a bundle is either an uncompressed tar of these files (``*.glsb``)
or the same files in a folder. The signature covers the manifest, the manifest covers every
file by sha256, so one check of the signature plus one hash per file proves the whole bundle
came from the holder of the private key. Only the public key lives on the appliance.
Why Ed25519: small keys, deterministic signatures, no parameters to get wrong, and
``cryptography`` is already a dependency.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.errors import UpdateError
from appliance.hashing import sha256_file

logger = logging.getLogger(__name__)

BUNDLE_MANIFEST = "bundle.json"
BUNDLE_SIGNATURE = "bundle.sig"
BUNDLE_SUFFIX = ".glsb"
FORMAT_VERSION = 1
# Used with fullmatch only: ``$`` in ``match`` would let a trailing newline through.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+){0,3}")
_CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 1024
#: Caps on what one bundle may list (and so write or download): files and total bytes.
MAX_BUNDLE_FILES = 256
MAX_BUNDLE_BYTES = 8 << 30


class BundleKind(str, Enum):
    """What a bundle updates."""

    MODEL = "model"
    SOFTWARE = "software"


@dataclass(frozen=True)
class FileEntry:
    """One payload file of a bundle: its sha256 (hex) and size in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True)
class BundleInfo:
    """The verified content of ``bundle.json``.

    Attributes
    ----------
    kind, family, version
        What the bundle updates; ``version`` is dotted integers (``"3"``, ``"1.2.0"``).
    files
        Payload file name -> :class:`FileEntry`.
    created_utc
        When it was signed (ISO 8601).
    metadata
        Free-form lineage (base model sha, data set hash, metrics...).
    manifest_sha256
        sha256 of the signed ``bundle.json`` bytes: the bundle's identity.
    """

    kind: BundleKind
    family: str
    version: str
    files: dict[str, FileEntry]
    created_utc: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    manifest_sha256: str = ""

    @property
    def version_key(self) -> tuple[int, ...]:
        """tuple of int: the version for ordering (``"1.10"`` > ``"1.9"``)."""
        return version_key(self.version)


def version_key(version: str) -> tuple[int, ...]:
    """Return dotted-integer ``version`` as a tuple for comparison, trailing zeros dropped.

    Raises
    ------
    UpdateError
        If the version is not dotted integers.
    """
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise UpdateError(f"Version {version!r} is not dotted integers such as 3 or 1.2.0.")
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def check_name(name: str) -> str:
    """Return ``name`` if it is a plain file name a bundle may carry, else raise UpdateError.

    Why: bundle file names become paths on the appliance; no separators, no dot files, no
    ``..`` means a bundle can never write outside its own folder.
    """
    if not _NAME_RE.fullmatch(name) or name in (BUNDLE_MANIFEST, BUNDLE_SIGNATURE):
        raise UpdateError(f"Bundle file name {name!r} is not allowed.")
    return name


# --- keys -------------------------------------------------------------------------------------


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair as PEM files and return the public key's fingerprint.

    The private key file is created with mode 0600 and must never reach an appliance.

    Raises
    ------
    UpdateError
        If either file already exists (keys are never overwritten silently).
    """
    for path in (private_path, public_path):
        if Path(path).exists():
            raise UpdateError(f"{path} already exists; refusing to overwrite a key.")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    Path(public_path).write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return fingerprint(key.public_key())


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """Return the first 16 hex digits of the sha256 of the raw public key (for logs and UI)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def is_dev_key(public_key: Ed25519PublicKey) -> bool:
    """Return whether ``public_key`` is the published development key, wherever it was loaded from.

    Why compare the key and not the path: a copy of the dev ``.pub`` under another name (say
    ``/etc/glanceseg/updates.pub``) is exactly as untrustworthy as the original.
    """
    from appliance.config import DEV_UPDATE_PUBLIC_KEY

    raw = lambda k: k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)  # noqa: E731
    try:
        dev = load_public_key(DEV_UPDATE_PUBLIC_KEY)
    except UpdateError:  # the dev key file is not shipped in this build: nothing to match
        return False
    return raw(public_key) == raw(dev)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an unencrypted PKCS#8 PEM Ed25519 private key, or raise UpdateError."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UpdateError(f"Cannot read the private key {path}: {exc}.") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UpdateError(f"{path} is not an Ed25519 private key.")
    return key


def load_public_key(path: Union[str, Path]) -> Ed25519PublicKey:
    """Load a PEM Ed25519 public key, or raise UpdateError (no key means no updates)."""
    if not str(path):
        raise UpdateError("No update public key is configured ([updates] public_key).")
    try:
        key = serialization.load_pem_public_key(Path(path).expanduser().read_bytes())
    except (OSError, ValueError) as exc:
        raise UpdateError(f"Cannot read the update public key {path}: {exc}.") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise UpdateError(f"{path} is not an Ed25519 public key.")
    return key


# --- making bundles ---------------------------------------------------------------------------


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def make_bundle(files: Iterable[Path], out_path: Path, kind: Union[str, BundleKind], family: str,
                version: str, private_key: Ed25519PrivateKey,
                metadata: Optional[Mapping[str, Any]] = None) -> BundleInfo:
    """Sign ``files`` into a bundle tar at ``out_path`` (written atomically).

    Parameters
    ----------
    files
        Payload files; each keeps its base name, which must pass :func:`check_name`.
        A folder stands for the plain files directly inside it.
    out_path
        Bundle file to write (``.glsb`` by convention).
    kind, family, version
        What the bundle updates; ``version`` is dotted integers.
    private_key
        The signing key (workstation side only).
    metadata
        JSON-serialisable lineage stored in the manifest and covered by the signature.

    Returns
    -------
    BundleInfo
        The manifest as signed.

    Raises
    ------
    UpdateError
        On a bad name, duplicate name, bad version or empty payload.
    """
    kind = BundleKind(kind)
    version_key(version)
    if not _NAME_RE.fullmatch(family):
        raise UpdateError(f"Family {family!r} is not a plain name.")
    paths: list[Path] = []
    for item in files:
        item = Path(item)
        paths.extend(sorted(p for p in item.iterdir() if p.is_file()) if item.is_dir() else [item])
    entries: dict[str, FileEntry] = {}
    for path in paths:
        name = check_name(path.name)
        if name in entries:
            raise UpdateError(f"Two payload files are named {name!r}.")
        entries[name] = FileEntry(sha256_file(path), path.stat().st_size)
    if not entries:
        raise UpdateError("A bundle needs at least one payload file.")
    manifest = {
        "format": FORMAT_VERSION, "kind": kind.value, "family": family, "version": version,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {n: {"sha256": e.sha256, "size": e.size} for n, e in sorted(entries.items())},
        "metadata": dict(metadata or {}),
    }
    manifest_bytes = _canonical(manifest)
    signature = private_key.sign(manifest_bytes)
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((BUNDLE_MANIFEST, manifest_bytes), (BUNDLE_SIGNATURE, signature)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for path in paths:
            info = tarfile.TarInfo(path.name)
            info.size, info.mode = path.stat().st_size, 0o644
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    os.replace(tmp, out_path)
    logger.info("signed %s bundle %s %s -> %s", kind.value, family, version, out_path)
    return _parse_manifest(manifest_bytes)


# --- receiving bundles ------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames and new entries in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_stream(src: Any, dest: Path, limit: int) -> None:
    with open(dest, "xb") as out:
        copied = 0
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            copied += len(chunk)
            if copied > limit:
                raise UpdateError(f"{dest.name} is larger than its manifest says.")
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())


def _read_capped(src: Any, limit: int, what: str) -> bytes:
    data = src.read(limit + 1)
    if len(data) > limit:
        raise UpdateError(f"The bundle's {what} is too large.")
    return data


def _read_plain(path: Path, limit: int) -> bytes:
    if path.is_symlink() or not path.is_file():
        raise UpdateError(f"Bundle folder {path.parent} lacks {path.name} as a plain file.")
    with open(path, "rb") as fh:
        return _read_capped(fh, limit, path.name)


def _check_payload_limits(info: BundleInfo) -> None:
    if len(info.files) > MAX_BUNDLE_FILES:
        raise UpdateError(f"The bundle lists {len(info.files)} files; at most {MAX_BUNDLE_FILES} are allowed.")
    total = sum(e.size for e in info.files.values())
    if any(e.size < 0 for e in info.files.values()) or total > MAX_BUNDLE_BYTES:
        raise UpdateError(f"The bundle's files total {total} bytes; at most {MAX_BUNDLE_BYTES} are allowed.")


def _verified_head(data: bytes, signature: bytes, public_key: Ed25519PublicKey) -> BundleInfo:
    """Check the signature of a bundle's manifest bytes and parse them, before any payload is copied."""
    try:
        public_key.verify(signature, data)
    except InvalidSignature as exc:
        raise UpdateError("The bundle signature does not verify with the appliance's update key.") from exc
    info = _parse_manifest(data)
    _check_payload_limits(info)
    return info


def _write_head(staging: Path, data: bytes, signature: bytes) -> None:
    for name, content in ((BUNDLE_MANIFEST, data), (BUNDLE_SIGNATURE, signature)):
        _copy_stream(io.BytesIO(content), staging / name, len(content))


def stage_bundle(source: Path, staging: Path, public_key: Ed25519PublicKey) -> BundleInfo:
    """Copy a bundle (tar file or folder) into the empty folder ``staging``, fsynced.

    ``bundle.json`` and ``bundle.sig`` are read (size-capped) and the signature checked
    *first*; then only the files the signed manifest lists are copied, each capped at its
    signed size. Why: an unsigned or hostile bundle must not be able to write anything big
    into the data folder (which holds the studies) before it is refused. Members must be plain,
    non-sparse regular files with allowed names, so a hostile tar cannot write elsewhere.
    Hashes are checked afterwards by :func:`verify_folder`.

    Returns
    -------
    BundleInfo
        The signed manifest (not yet checked against the copied files' hashes).

    Raises
    ------
    UpdateError
        If the source is missing, not a bundle, unsigned or signed by another key, lists too
        much, or holds anything its signed manifest does not list.
    """
    source, staging = Path(source), Path(staging)
    info: Optional[BundleInfo] = None
    if source.is_dir():
        data = _read_plain(source / BUNDLE_MANIFEST, MAX_MANIFEST_BYTES)
        signature = _read_plain(source / BUNDLE_SIGNATURE, MAX_SIGNATURE_BYTES)
        info = _verified_head(data, signature, public_key)
        for path in sorted(source.iterdir()):
            if path.name in (BUNDLE_MANIFEST, BUNDLE_SIGNATURE):
                continue
            if path.is_symlink() or not path.is_file() or path.name not in info.files:
                raise UpdateError(f"Bundle folder {source} holds {path.name!r}, which its signed manifest "
                                  "does not list as a file.")
        staging.mkdir(parents=True, exist_ok=False)
        _write_head(staging, data, signature)
        for name, entry in info.files.items():
            try:
                with open(source / name, "rb") as fh:
                    _copy_stream(fh, staging / name, entry.size)
            except FileNotFoundError as exc:
                raise UpdateError(f"Bundle folder {source} lacks {name}.") from exc
    elif source.is_file():
        staging.mkdir(parents=True, exist_ok=False)
        try:
            with tarfile.open(source, "r:") as tar:
                head: dict[str, bytes] = {}
                for member in tar:
                    if (not member.isreg() or member.issparse() or member.type == tarfile.GNUTYPE_SPARSE
                            or "/" in member.name):
                        raise UpdateError(f"Bundle {source.name} holds {member.name!r}, not a plain file.")
                    fh = tar.extractfile(member)
                    if info is None:  # the first two members: the signed manifest and its signature
                        if member.name not in (BUNDLE_MANIFEST, BUNDLE_SIGNATURE) or member.name in head:
                            raise UpdateError(f"Bundle {source.name} does not start with {BUNDLE_MANIFEST} and "
                                              f"{BUNDLE_SIGNATURE} (found {member.name!r}).")
                        cap = MAX_MANIFEST_BYTES if member.name == BUNDLE_MANIFEST else MAX_SIGNATURE_BYTES
                        head[member.name] = _read_capped(fh, cap, member.name)
                        if len(head) == 2:
                            info = _verified_head(head[BUNDLE_MANIFEST], head[BUNDLE_SIGNATURE], public_key)
                            _write_head(staging, head[BUNDLE_MANIFEST], head[BUNDLE_SIGNATURE])
                        continue
                    entry = info.files.get(member.name)
                    if entry is None or member.size != entry.size:
                        raise UpdateError(f"Bundle {source.name} holds {member.name!r}, which its signed manifest "
                                          "does not list with that size.")
                    _copy_stream(fh, staging / member.name, entry.size)
                if info is None:
                    raise UpdateError(f"Bundle {source.name} lacks {BUNDLE_MANIFEST} or {BUNDLE_SIGNATURE}.")
        except (tarfile.TarError, EOFError) as exc:
            raise UpdateError(f"{source} is not a readable bundle: {exc}.") from exc
        except FileExistsError as exc:
            raise UpdateError(f"Bundle {source.name} holds a file twice.") from exc
    else:
        raise UpdateError(f"Bundle {source} does not exist.")
    fsync_dir(staging)
    assert info is not None
    return info


def _parse_manifest(data: bytes) -> BundleInfo:
    try:
        raw = json.loads(data)
        if raw.get("format") != FORMAT_VERSION:
            raise UpdateError(f"Bundle format {raw.get('format')!r} is not supported.")
        files = {check_name(n): FileEntry(str(e["sha256"]), int(e["size"]))
                 for n, e in raw["files"].items()}
        info = BundleInfo(kind=BundleKind(raw["kind"]), family=str(raw["family"]),
                          version=str(raw["version"]), files=files,
                          created_utc=str(raw.get("created_utc", "")),
                          metadata=dict(raw.get("metadata") or {}),
                          manifest_sha256=hashlib.sha256(data).hexdigest())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UpdateError(f"The bundle manifest is malformed: {exc}.") from exc
    version_key(info.version)
    return info


def verify_folder(folder: Path, public_key: Ed25519PublicKey, check_hashes: bool = True) -> BundleInfo:
    """Verify a staged or installed bundle folder: signature, exact file set, sizes, sha256.

    Extra files written by the appliance itself are allowed only under names starting with
    ``_`` (e.g. ``_site`` for an unpacked wheel); anything else not in the manifest is refused.

    Raises
    ------
    UpdateError
        If the signature does not verify with ``public_key``, or a file is missing, extra,
        of the wrong size or the wrong hash.
    """
    folder = Path(folder)
    try:
        data = (folder / BUNDLE_MANIFEST).read_bytes()
        signature = (folder / BUNDLE_SIGNATURE).read_bytes()
    except OSError as exc:
        raise UpdateError(f"{folder} is not a complete bundle: {exc.strerror}.") from exc
    if len(data) > MAX_MANIFEST_BYTES:
        raise UpdateError("The bundle manifest is too large.")
    info = _verified_head(data, signature, public_key)
    present = {p.name for p in folder.iterdir() if not p.name.startswith("_")}
    expected = set(info.files) | {BUNDLE_MANIFEST, BUNDLE_SIGNATURE}
    if present != expected:
        raise UpdateError(f"Bundle files differ from its manifest: missing {sorted(expected - present)}, "
                          f"extra {sorted(present - expected)}.")
    for name, entry in info.files.items():
        path = folder / name
        if path.is_symlink() or path.stat().st_size != entry.size:
            raise UpdateError(f"{name} has the wrong size or type.")
        if check_hashes and sha256_file(path) != entry.sha256:
            raise UpdateError(f"{name} does not match its sha256 in the signed manifest.")
    return info


def remove_tree(path: Path) -> None:
    """Delete a folder tree if present (a half-copied staging folder, a pruned version)."""
    if Path(path).is_symlink():
        Path(path).unlink()
    elif Path(path).exists():
        shutil.rmtree(path)
