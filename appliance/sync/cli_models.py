"""``glanceseg models keygen|sign|install|rollback|reconcile|list|check|warmup|verify`` and ``glanceseg software ...``.

Signing happens on a workstation holding the private key; everything else runs on the
appliance, which holds only the public key (``[updates] public_key``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import UpdateError
from appliance.sync.bundles import (BUNDLE_MANIFEST, BundleKind, generate_keypair, load_private_key,
                                    make_bundle, verify_folder)
from appliance.sync.model_updates import install_from_server, model_store, newest_bundle
from appliance.sync.software_updates import SOFTWARE_FAMILY, running_from, software_store
from appliance.sync.versions import VersionedStore

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``models`` and ``software`` command groups."""
    models = subparsers.add_parser("models", help="signed model bundles: keygen, sign, install, rollback, list")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    p = msub.add_parser("keygen", help="write a new Ed25519 signing key pair (developers, release managers)")
    p.add_argument("--out", type=Path, required=True, help="folder for signing_key.pem and signing_key.pub")
    p.set_defaults(handler=run_keygen)

    p = msub.add_parser("sign", help="sign files (or a model folder) into a bundle")
    p.add_argument("files", nargs="+", type=Path, help="payload files, or a folder such as models/")
    p.add_argument("--key", type=Path, required=True, help="PEM Ed25519 private key")
    p.add_argument("--version", required=True, help="dotted-integer version, newer than what runs")
    p.add_argument("--kind", choices=[k.value for k in BundleKind], default=BundleKind.MODEL.value)
    p.add_argument("--family", default=None, help="default: [model] name, or glanceseg for software")
    p.add_argument("--metadata", type=Path, default=None, help="JSON file of lineage to sign along")
    p.add_argument("--out", type=Path, required=True, help="bundle file to write (*.glsb)")
    p.set_defaults(handler=run_sign)

    for group, kind in ((msub, BundleKind.MODEL), (_software_group(subparsers), BundleKind.SOFTWARE)):
        p = group.add_parser("install", help=f"verify and activate a {kind.value} bundle")
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("source", nargs="?", type=Path,
                         help="bundle file, bundle folder, or a folder (USB stick) of bundles")
        src.add_argument("--server", action="store_true", help="fetch the newest from [updates] server_url")
        p.add_argument("--force", action="store_true",
                       help="install a version rolled back before, or older than one installed before")
        p.set_defaults(handler=run_install, kind=kind.value)
        p = group.add_parser("rollback", help=f"return to the previous {kind.value} version")
        p.set_defaults(handler=run_rollback, kind=kind.value)
        p = group.add_parser("reconcile", help=f"stop using an installed {kind.value} version that the "
                                               "shipped one (a newer base image) has caught up with")
        p.set_defaults(handler=run_reconcile, kind=kind.value)
        p = group.add_parser("list", help=f"installed {kind.value} versions")
        p.add_argument("--verify", action="store_true", help="also check every file's sha256")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=run_list, kind=kind.value)

    p = msub.add_parser("check", help="check the active model files against their manifest (sha256)")
    p.set_defaults(handler=run_check)

    p = msub.add_parser("warmup", help="open the model sessions as the appliance does and run each once "
                                      "(builds and caches TensorRT engines; firmware_scripts/build-trt-engines)")
    p.set_defaults(handler=run_warmup)

    p = msub.add_parser("verify", help="check a bundle's signature and hashes without installing")
    p.add_argument("source", type=Path, help="bundle file or folder")
    p.set_defaults(handler=run_verify)


def _software_group(subparsers: Any) -> Any:
    software = subparsers.add_parser("software", help="signed software release bundles: install, rollback, list")
    return software.add_subparsers(dest="software_command", metavar="ACTION", required=True)


def _store(args: argparse.Namespace, config: Config) -> VersionedStore:
    return software_store(config) if args.kind == BundleKind.SOFTWARE.value else model_store(config)


def run_keygen(args: argparse.Namespace, config: Config) -> int:
    """Write ``signing_key.pem`` (0600) and ``signing_key.pub`` into ``--out``."""
    args.out.mkdir(parents=True, exist_ok=True)
    fp = generate_keypair(args.out / "signing_key.pem", args.out / "signing_key.pub")
    print(f"wrote {args.out / 'signing_key.pem'} (keep offline) and {args.out / 'signing_key.pub'}")
    print(f"fingerprint {fp}")
    return 0


def run_sign(args: argparse.Namespace, config: Config) -> int:
    """Sign payload files into a bundle."""
    family = args.family or (SOFTWARE_FAMILY if args.kind == BundleKind.SOFTWARE.value else config.model.name)
    metadata = {}
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata.read_text())
        except (OSError, ValueError) as exc:
            raise UpdateError(f"Cannot read metadata {args.metadata}: {exc}.") from exc
    info = make_bundle(args.files, args.out, args.kind, family, args.version,
                       load_private_key(args.key), metadata)
    print(f"{args.out}: {info.kind.value} {info.family} {info.version}, {len(info.files)} files, "
          f"bundle sha256 {info.manifest_sha256}")
    return 0


def run_install(args: argparse.Namespace, config: Config) -> int:
    """Install from a bundle, a folder of bundles, or the update server."""
    store = _store(args, config)
    store.recover()
    if args.server:
        info = install_from_server(config, store)
        if info is None:
            print("no newer bundle on the update server")
            return 0
    else:
        source = args.source
        if source.is_dir() and not (source / BUNDLE_MANIFEST).is_file():
            found = newest_bundle(source, store)
            if found is None:
                print(f"no {args.kind} bundle newer than {store.current_version() or store.baseline_version} in {source}")
                return 0
            source = found
        info = store.install(source, force=args.force)
    print(f"installed {info.kind.value} {info.family} {info.version} (bundle sha256 {info.manifest_sha256})")
    return 0


def run_rollback(args: argparse.Namespace, config: Config) -> int:
    """Switch back to the previous version."""
    version = _store(args, config).rollback()
    print(f"active {args.kind} version is now {version}")
    return 0


def run_reconcile(args: argparse.Namespace, config: Config) -> int:
    """Retire installed versions no newer than the shipped one (glanceseg.service runs it first).

    For software this must run on the base image's code (``env -u PYTHONPATH``): run from an
    installed release, "the shipped version" would read as that release itself.
    """
    store = _store(args, config)
    if args.kind == BundleKind.SOFTWARE.value and running_from(store.root):
        raise UpdateError("Run this with the base image's code, not an installed release: "
                          "env -u PYTHONPATH glanceseg software reconcile.")
    retired = store.retire_superseded()
    shipped = store.baseline_version
    print(f"retired {args.kind} {retired}: the shipped {shipped} runs" if retired
          else f"nothing to retire ({args.kind} {store.current_version() or 'shipped ' + shipped} runs)")
    return 0


def run_list(args: argparse.Namespace, config: Config) -> int:
    """List installed versions (``*`` active, ``-`` previous)."""
    store = _store(args, config)
    rows = store.list(check_hashes=args.verify)
    if args.json:
        print(json.dumps({
            "family": store.family, "shipped": store.baseline_version, "active": store.current_version(),
            "versions": [{"version": v.version, "active": v.active, "previous": v.previous, "valid": v.info is not None,
                          "manifest_sha256": v.info.manifest_sha256 if v.info else None,
                          "created_utc": v.info.created_utc if v.info else None} for v in rows]}, indent=2))
        return 0
    print(f"{store.kind.value} family {store.family}; shipped version {store.baseline_version}")
    if not store.current_version():
        print("* shipped (no installed version active)")
    for v in rows:
        mark = "*" if v.active else "-" if v.previous else " "
        state = f"signed {v.info.created_utc}" if v.info else "INVALID"
        print(f"{mark} {v.version:<10} {state}")
    return 0


def run_check(args: argparse.Namespace, config: Config) -> int:
    """Verify every file of the active model folder; what ``make run`` does before serving.

    Raises
    ------
    ModelError
        If the manifest or a file it names is missing or altered.
    """
    from appliance.glance.modelfiles import load_for_config, verify_all

    files = load_for_config(config)
    checked = verify_all(files)
    print(f"models ok: {files.name} in {files.dir} ({len(checked)} files, manifest sha256 {files.manifest_sha256[:16]})")
    return 0


def run_warmup(args: argparse.Namespace, config: Config) -> int:
    """Open the encoder and decoder exactly as the appliance will and run each once.

    Why: onnxruntime's TensorRT provider builds its engines when a session first runs, which
    takes minutes on a Jetson; ``firmware_scripts/build-trt-engines`` calls this at
    provisioning so that the engines the appliance will look for (the variant
    ``[model] variant`` resolves to, the decoder's batch profile) are in the cache before the
    first reading. On a CPU build it checks that the models load and run. Prints one JSON line.
    """
    import time

    import numpy as np

    from appliance.glance.runtime.base import MAX_DECODE_BATCH
    from appliance.glance.runtime.factory import build_runtime

    t0 = time.monotonic()
    runtime = build_runtime(config)
    size = runtime.input_size
    embedding = runtime.encode(np.zeros((size, size, 3), np.uint8))
    boxes = np.tile(np.array([[size / 4, size / 4, size / 2, size / 2]], np.float32), (MAX_DECODE_BATCH, 1))
    for n in (1, MAX_DECODE_BATCH):  # both ends of the decoder's batch profile
        runtime.decode(embedding, boxes[:n])
    print(json.dumps({"model": runtime.name, "variant": getattr(runtime, "variant", None),
                      "providers": getattr(runtime, "providers", None),
                      "seconds": round(time.monotonic() - t0, 1)}))
    runtime.close()
    return 0


def run_verify(args: argparse.Namespace, config: Config) -> int:
    """Verify a bundle in a scratch folder without installing it."""
    import tempfile

    from appliance.sync.bundles import load_public_key, stage_bundle

    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "b"
        key = load_public_key(config.updates.public_key)
        stage_bundle(args.source, staging, key)
        info = verify_folder(staging, key)
    print(f"OK: {info.kind.value} {info.family} {info.version}, {len(info.files)} files verified")
    return 0
