"""Signed model and software updates: refusals, atomic switch, power cuts, rollback, server, CLI."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import pytest

from appliance.config import load_config
from appliance.errors import UpdateError
from appliance.store import db as store_db
from appliance.sync import cli_models
from appliance.sync.bundles import (BundleKind, generate_keypair, load_private_key, load_public_key,
                                    make_bundle, verify_folder)
from appliance.sync.model_updates import ModelUpdates, install_from_server, model_store
from appliance.sync.software_updates import SoftwareUpdates
from appliance.sync.versions import CURRENT, PREVIOUS

FAMILY = "litemedsam"
STEPS = ("staged", "verified", "prepared", "moved", "previous", "switched", "pruned")


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    generate_keypair(priv, pub)
    return priv, pub


def model_folder(root: Path, version: str, family: str = FAMILY, payload_bytes: int = 2048) -> Path:
    """A model folder like models/: manifest.json plus two ONNX-named payloads (content by version)."""
    folder = root / f"src-{family}-{version}"
    folder.mkdir(parents=True)
    rng = random.Random(f"{family}{version}")
    files = []
    for role in ("encoder", "decoder"):
        data = bytes(rng.getrandbits(8) for _ in range(payload_bytes))
        (folder / f"{role}.onnx").write_bytes(data)
        files.append({"role": role, "variant": "int8", "file": f"{role}.onnx", "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
    (folder / "manifest.json").write_text(json.dumps({"name": family, "version": version, "input_size": 256,
                                                      "files": files}))
    return folder


def bundle(tmp_path: Path, priv: Path, version: str, family: str = FAMILY, **kw) -> Path:
    out = tmp_path / f"{family}-{version}.glsb"
    make_bundle([model_folder(tmp_path, version, family, **kw)], out, BundleKind.MODEL, family, version,
                load_private_key(priv), {"note": "test"})
    return out


def store_at(root: Path, pub: Path) -> ModelUpdates:
    return ModelUpdates(root, load_public_key(pub), BundleKind.MODEL, FAMILY, "1")


def assert_running(store: ModelUpdates, version: str) -> None:
    """The active folder is ``version`` and verifies completely (what the runtime would load)."""
    assert store.current_version() == version
    info = verify_folder(store.current_path(), store.public_key)
    assert info.version == version
    assert json.loads((store.current_path() / "manifest.json").read_text())["version"] == version


@pytest.fixture()
def installed(tmp_path: Path, keys) -> ModelUpdates:
    """A store with version 2 installed and active."""
    store = store_at(tmp_path / "data" / "models", keys[1])
    store.install(bundle(tmp_path, keys[0], "2"))
    assert_running(store, "2")
    return store


def rewrite_tar(src: Path, dest: Path, edit) -> None:
    """Copy a bundle tar, passing each (name, bytes) through ``edit``."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w") as tout:
        for m in tin:
            name, data = edit(m.name, tin.extractfile(m).read())
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def test_install_verifies_and_switches(installed: ModelUpdates, tmp_path: Path, keys) -> None:
    info = installed.install(bundle(tmp_path, keys[0], "3"))
    assert info.version == "3" and info.metadata == {"note": "test"}
    assert_running(installed, "3")
    assert installed.previous_version() == "2"
    assert [v.version for v in installed.list(check_hashes=True)] == ["3", "2"]
    assert os.readlink(installed.root / CURRENT) == "3"  # relative: the data folder can move


def test_tampered_payload_is_refused(installed: ModelUpdates, tmp_path: Path, keys) -> None:
    good = bundle(tmp_path, keys[0], "3")
    bad = tmp_path / "bad.glsb"
    rewrite_tar(good, bad, lambda n, d: (n, d[:-1] + bytes([d[-1] ^ 1]) if n == "decoder.onnx" else d))
    with pytest.raises(UpdateError, match="sha256"):
        installed.install(bad)
    assert_running(installed, "2")
    assert not any((installed.root / ".incoming").glob("*"))


def test_tampered_manifest_and_wrong_key_are_refused(installed: ModelUpdates, tmp_path: Path, keys) -> None:
    good = bundle(tmp_path, keys[0], "3")
    bad = tmp_path / "bad.glsb"
    rewrite_tar(good, bad, lambda n, d: (n, d.replace(b'"version":"3"', b'"version":"9"')
                                         if n == "bundle.json" else d))
    with pytest.raises(UpdateError, match="signature"):
        installed.install(bad)
    other_priv, _ = tmp_path / "other.pem", generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    foreign = tmp_path / "foreign.glsb"
    make_bundle([model_folder(tmp_path, "4")], foreign, "model", FAMILY, "4", load_private_key(other_priv))
    with pytest.raises(UpdateError, match="signature"):
        installed.install(foreign)
    assert_running(installed, "2")


def test_downgrade_same_version_other_family_other_kind_are_refused(installed, tmp_path, keys) -> None:
    for version in ("1", "2", "1.9.9", "2.0"):
        with pytest.raises(UpdateError, match="not newer"):
            installed.install(bundle(tmp_path / f"d{version}", keys[0], version))
    with pytest.raises(UpdateError, match="mobilesam"):
        installed.install(bundle(tmp_path, keys[0], "5", family="mobilesam"))
    sw = tmp_path / "sw.glsb"
    make_bundle([model_folder(tmp_path / "sw", "6")], sw, "software", FAMILY, "6", load_private_key(keys[0]))
    with pytest.raises(UpdateError, match="software bundle"):
        installed.install(sw)
    # signed for this family, but the model folder inside claims another model
    src = model_folder(tmp_path / "mm", "7", family="mobilesam")
    mixed = tmp_path / "mixed.glsb"
    make_bundle([src], mixed, "model", FAMILY, "7", load_private_key(keys[0]))
    with pytest.raises(UpdateError, match="manifest names"):
        installed.install(mixed)
    assert_running(installed, "2")
    assert sorted(p.name for p in installed.root.iterdir() if not p.name.startswith(".")) == ["2", CURRENT]


def test_hostile_tar_is_refused(installed: ModelUpdates, tmp_path: Path, keys) -> None:
    good = bundle(tmp_path, keys[0], "3")
    for evil in ("../escape.onnx", "sub/dir.onnx", ".hidden"):
        bad = tmp_path / "evil.glsb"
        rewrite_tar(good, bad, lambda n, d, e=evil: (e if n == "decoder.onnx" else n, d))
        with pytest.raises(UpdateError):
            installed.install(bad)
    assert not (installed.root.parent / "escape.onnx").exists()
    assert_running(installed, "2")


def test_rollback_and_back(installed: ModelUpdates, tmp_path: Path, keys) -> None:
    installed.install(bundle(tmp_path, keys[0], "3"))
    assert installed.rollback() == "2"
    assert_running(installed, "2")
    assert installed.previous_version() == "3"
    assert installed.rollback() == "3"
    assert_running(installed, "3")
    fresh = store_at(tmp_path / "empty", keys[1])
    with pytest.raises(UpdateError, match="no previous"):
        fresh.rollback()



def test_a_rollback_sticks_and_older_releases_stay_out(installed: ModelUpdates, tmp_path: Path, keys) -> None:
    # A model rolled back for misgrading must not come back with the next server check or the
    # same USB stick, nor may an older signed release be replayed; a technician may force it.
    from appliance.sync.model_updates import newest_bundle

    v3 = bundle(tmp_path, keys[0], "3")
    installed.install(v3)
    assert installed.rollback() == "2"
    with pytest.raises(UpdateError, match="rolled back"):
        installed.install(v3)
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / "litemedsam-3.glsb").write_bytes(v3.read_bytes())
    (tmp_path / "b25").mkdir()
    (stick / "litemedsam-2.5.glsb").write_bytes(bundle(tmp_path / "b25", keys[0], "2.5").read_bytes())
    assert newest_bundle(stick, installed) is None  # neither the rolled-back 3 nor the older 2.5
    with pytest.raises(UpdateError, match="older than 3"):
        installed.install(stick / "litemedsam-2.5.glsb")
    assert_running(installed, "2")
    installed.install(v3, force=True)  # the technician's explicit decision
    assert_running(installed, "3") and installed.unwanted("3") is None
    (tmp_path / "b4").mkdir()
    installed.install(bundle(tmp_path / "b4", keys[0], "4"))
    assert_running(installed, "4")


def test_rollback_refuses_a_corrupted_previous(installed: ModelUpdates, tmp_path: Path, keys) -> None:
    installed.install(bundle(tmp_path, keys[0], "3"))
    (installed.root / "2" / "encoder.onnx").write_bytes(b"x" * 2048)
    with pytest.raises(UpdateError, match="sha256"):
        installed.rollback()
    assert_running(installed, "3")


CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from appliance.sync.bundles import BundleKind, load_public_key
    from appliance.sync.model_updates import ModelUpdates
    root, pub, src, step = sys.argv[1:5]
    def hook(name):
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)
    store = ModelUpdates(Path(root), load_public_key(pub), BundleKind.MODEL, "litemedsam", "1")
    store.install(Path(src), hook)
    print("done", flush=True)
""")


def run_child(root: Path, pub: Path, src: Path, step: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(pub), str(src), step],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("step", STEPS)
def test_power_cut_at_each_step_leaves_a_complete_model(installed, tmp_path, keys, step) -> None:
    new = bundle(tmp_path, keys[0], "3")
    proc = run_child(installed.root, keys[1], new, step)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    after = store_at(installed.root, keys[1])
    expected = "2" if STEPS.index(step) < STEPS.index("switched") else "3"
    assert_running(after, expected)  # before start-up recovery: what a reboot would load
    after.recover()
    assert not (after.root / ".incoming").exists()
    if expected == "2":  # the update can simply be tried again
        after.install(new)
    assert_running(after, "3")
    assert after.previous_version() == "2"
    after.rollback()
    assert_running(after, "2")


def test_power_cut_at_random_moments(installed: ModelUpdates, tmp_path: Path, keys) -> None:
    """kill -9 at random moments, mostly while the (larger) bundle is being copied."""
    rng = random.Random(20261127)
    new = bundle(tmp_path, keys[0], "3", payload_bytes=6 << 20)
    outcomes = set()
    for _ in range(6):
        proc = run_child(installed.root, keys[1], new, "never")
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=120)
        store = store_at(installed.root, keys[1])
        version = store.current_version()
        assert version in ("2", "3")
        assert_running(store, version)
        outcomes.add(version)
        store.recover()
        if version == "3":
            store.rollback()
            assert_running(store, "2")
            for path in store.root.iterdir():  # forget 3 so that it installs afresh
                if path.name == "3":
                    import shutil
                    shutil.rmtree(path)
            (store.root / PREVIOUS).unlink()
    assert outcomes  # at least one cut observed (which ones depends on the machine's speed)


def test_install_from_loopback_server(installed: ModelUpdates, tmp_path: Path, keys) -> None:
    served = tmp_path / "served"
    (served / "u").mkdir(parents=True)
    for v in ("3", "4"):
        bundle(tmp_path / f"s{v}", keys[0], v).rename(served / "u" / f"m{v}.glsb")
    bundle(tmp_path / "s9", keys[0], "9", family="mobilesam").rename(served / "u" / "x9.glsb")
    (served / "u" / "index.json").write_text(json.dumps({"bundles": [
        {"kind": "model", "family": FAMILY, "version": "3", "file": "m3.glsb"},
        {"kind": "model", "family": FAMILY, "version": "4", "file": "m4.glsb"},
        {"kind": "model", "family": "mobilesam", "version": "9", "file": "x9.glsb"}]}))
    handler = lambda *a, **kw: _QuietHandler(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="update-server", daemon=True)
    thread.start()
    try:
        config = load_config(environ={"GLANCESEG_UPDATES_SERVER_URL": f"http://127.0.0.1:{server.server_port}/u/"})
        info = install_from_server(config, installed)
        assert info is not None and info.version == "4"
        assert_running(installed, "4")
        assert install_from_server(config, installed) is None  # nothing newer
        assert not any((installed.root / ".downloads").glob("*"))
    finally:
        server.shutdown()
        thread.join()
    remote = load_config(environ={"GLANCESEG_UPDATES_SERVER_URL": "http://updates.example/"})
    with pytest.raises(UpdateError, match="https"):
        install_from_server(remote, installed)


def test_the_update_servers_credentials_stay_out_of_messages_and_logs(installed: ModelUpdates, tmp_path: Path,
                                                                     caplog) -> None:
    """An update server behind basic auth has its credentials in [updates] server_url; its
    refusals ("401 Client Error ... for url: http://user:password@...") were printed by the CLI
    and logged by serve at every check, into the journal and collect-logs' support bundle."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "index.json").write_text(json.dumps({"bundles": []}))
    handler = lambda *a, **kw: _QuietHandler(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="update-server", daemon=True)
    thread.start()
    try:
        base = f"http://sync:s3cret-token@127.0.0.1:{server.server_port}"
        with caplog.at_level("INFO", logger="appliance.sync"):
            assert install_from_server(load_config(environ={"GLANCESEG_UPDATES_SERVER_URL": base + "/"}),
                                       installed) is None
        assert "no newer model bundle" in caplog.text and "s3cret" not in caplog.text
        with pytest.raises(UpdateError) as refused:
            install_from_server(load_config(environ={"GLANCESEG_UPDATES_SERVER_URL": base + "/missing/"}),
                                installed)
        assert "404" in str(refused.value) and "s3cret" not in str(refused.value)
        assert refused.value.__cause__ is None and "127.0.0.1" in str(refused.value)
    finally:
        server.shutdown()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


def make_wheel(path: Path, version: str, migrations: int = 0) -> Path:
    """A wheel of ``version``; with ``migrations``, carrying the first that many schema migrations."""
    wheel = path / f"glanceseg-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("glanceseg_probe/__init__.py", f"VERSION = {version!r}\n")
        for m in store_db.discover_migrations()[:migrations]:
            zf.writestr(f"appliance/store/migrations/{m.path.name}", m.sql)
        zf.writestr(f"glanceseg-{version}.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: glanceseg\nVersion: {version}\n")
    return wheel


def software_releases(tmp_path: Path, keys, *versions: str, database: Optional[Path] = None,
                      migrations: Sequence[int] = ()) -> SoftwareUpdates:
    """A software store on the shipped 0.1.0 with ``versions`` installed in order (bundles in tmp_path).

    ``migrations[i]``: how many schema migrations the wheel of ``versions[i]`` carries.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = SoftwareUpdates(tmp_path / "software", load_public_key(keys[1]), BundleKind.SOFTWARE,
                            "glanceseg", "0.1.0", database=database)
    for i, version in enumerate(versions):
        out = tmp_path / f"sw-{version}.glsb"
        wheel = make_wheel(tmp_path, version, migrations[i] if migrations else 0)
        make_bundle([wheel], out, "software", "glanceseg", version, load_private_key(keys[0]))
        store.install(out)
    return store


def test_a_rollback_past_a_schema_migration_is_refused_while_the_running_release_still_works(
        tmp_path: Path, keys) -> None:
    # 0.2.0 knows three migrations, 0.3.0 a fourth, which it applied when it started. 0.2.0
    # refuses that database ("written by a newer release"): rolling back to it would leave a
    # service that does not start, at a station with no one to repair it.
    known = store_db.discover_migrations()
    assert len(known) >= 4
    database = store_db.database_path(tmp_path)
    conn = store_db.connect(database)
    store_db.migrate(conn, known[:3])
    store = software_releases(tmp_path, keys, "0.2.0", "0.3.0", database=database, migrations=(3, 4))
    store_db.migrate(conn, known[:4])  # 0.3.0 running
    with pytest.raises(UpdateError, match=r"0\.2\.0 cannot open .*schema version\(s\) \[4\]"):
        store.rollback()
    assert store.current_version() == "0.3.0" and store.previous_version() == "0.2.0"
    # The base image is checked the same way: its copy here is this checkout, which knows every
    # migration but not one a future release might write.
    store = software_releases(tmp_path / "b", keys, "0.2.0", database=database, migrations=(4,))
    conn.execute("INSERT INTO schema_migrations (version, name, sha256, applied_at) VALUES (99, 'future', '', '')")
    with pytest.raises(UpdateError, match=r"base image's 0\.1\.0 cannot open"):
        store.rollback()
    assert store.current_version() == "0.2.0"
    conn.execute("DELETE FROM schema_migrations WHERE version = 99")
    assert store.rollback() == "0.1.0" and store.current_version() is None
    # And a release that does not know the database's migrations is not installed at all.
    with pytest.raises(UpdateError, match=r"0\.5\.0.* cannot open"):
        software_releases(tmp_path / "c", keys, "0.5.0", database=database, migrations=(2,))
    conn.close()


def test_software_bundle_install_and_rollback(tmp_path: Path, keys) -> None:
    store = software_releases(tmp_path, keys, "0.2.0", "0.3.0")
    site = store.current_path() / "_site"
    assert "0.3.0" in (site / "glanceseg_probe" / "__init__.py").read_text()
    verify_folder(store.current_path(), store.public_key)  # _site does not break verification
    assert store.rollback() == "0.2.0"
    assert "0.2.0" in (store.current_path() / "_site" / "glanceseg_probe" / "__init__.py").read_text()
    evil = tmp_path / "evil"
    evil.mkdir()
    wheel = evil / "glanceseg-0.4.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("../../escape.py", "x")
    make_bundle([wheel], tmp_path / "evil.glsb", "software", "glanceseg", "0.4.0", load_private_key(keys[0]))
    with pytest.raises(UpdateError, match="unsafe"):
        store.install(tmp_path / "evil.glsb")
    with pytest.raises(UpdateError, match="not newer"):
        store.install(tmp_path / "sw-0.2.0.glsb")
    assert store.current_version() == "0.2.0"


def test_the_unpacked_code_of_a_release_is_checked_like_its_signed_files(tmp_path: Path, keys) -> None:
    # The code that runs is _site, which the signature does not cover: emptied by a power cut or
    # altered, it must not pass `software list --verify` or a rollback to it.
    store = software_releases(tmp_path, keys, "0.2.0", "0.3.0")
    assert all(v.info is not None for v in store.list(check_hashes=True))
    probe = store.root / "0.2.0" / "_site" / "glanceseg_probe" / "__init__.py"
    probe.write_text("")  # what a power cut right after the switch could leave
    listed = {v.version: v.info for v in store.list(check_hashes=True)}
    assert listed["0.2.0"] is None and listed["0.3.0"] is not None
    with pytest.raises(UpdateError, match="altered"):
        store.rollback()
    (store.root / "0.3.0" / "_site" / "planted.py").write_text("import os")
    assert {v.version: v.info for v in store.list(check_hashes=True)}["0.3.0"] is None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glanceseg")
    cli_models.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_keygen_sign_install_list_rollback(tmp_path: Path, capsys) -> None:
    keydir = tmp_path / "keys"
    config = None

    def cli(*argv: str) -> int:
        args = _parser().parse_args(list(argv))
        return args.handler(args, config)

    assert cli("models", "keygen", "--out", str(keydir)) == 0
    assert oct((keydir / "signing_key.pem").stat().st_mode & 0o777) == "0o600"
    config = load_config(environ={"GLANCESEG_DATA_DIR": str(tmp_path / "data"),
                                  "GLANCESEG_UPDATES_PUBLIC_KEY": str(keydir / "signing_key.pub"),
                                  "GLANCESEG_MODEL_DIR": str(tmp_path / "nomodels")})
    usb = tmp_path / "usb"
    usb.mkdir()
    for v in ("2", "3"):
        assert cli("models", "sign", str(model_folder(tmp_path, v)), "--key", str(keydir / "signing_key.pem"),
                   "--version", v, "--out", str(usb / f"m{v}.glsb")) == 0
    assert cli("models", "verify", str(usb / "m2.glsb")) == 0
    assert cli("models", "install", str(usb)) == 0  # a USB folder: the newest wins
    store = model_store(config)
    assert_running(store, "3")
    assert cli("models", "install", str(usb)) == 0  # nothing newer: no-op
    assert "no model bundle newer" in capsys.readouterr().out
    assert cli("models", "list", "--json", "--verify") == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["active"] == "3" and all(v["valid"] for v in listing["versions"])
    with pytest.raises(UpdateError, match="not newer"):
        cli("models", "install", str(usb / "m2.glsb"))
    assert model_store(config).current_version() == "3"
    assert cli("models", "rollback") == 0  # 3 was the first installed: back to the shipped model
    assert store.current_version() is None and store.previous_version() == "3"
    with pytest.raises(UpdateError, match="rolled back"):  # it stays rolled back...
        cli("models", "install", str(usb / "m3.glsb"))
    assert cli("models", "install", str(usb / "m3.glsb"), "--force") == 0  # ...unless forced; reuses the kept folder
    assert_running(store, "3")


def test_public_key_is_required(tmp_path: Path) -> None:
    config = load_config(environ={"GLANCESEG_UPDATES_PUBLIC_KEY": str(tmp_path / "missing.pub")})
    with pytest.raises(UpdateError, match="public key"):
        model_store(config)


def test_model_manifest_must_match_the_payload(installed: ModelUpdates, tmp_path: Path, keys) -> None:
    src = model_folder(tmp_path / "mf", "5")
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["files"] = [{"role": "decoder", "variant": "fp32", "file": "decoder.onnx", "sha256": "0" * 64}]
    (src / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "mf.glsb"
    make_bundle([src], out, "model", FAMILY, "5", load_private_key(keys[0]))
    with pytest.raises(UpdateError, match="does not carry"):
        installed.install(out)
    assert_running(installed, "2")


@pytest.mark.parametrize("edit, match", [
    (lambda m: {"version": m["version"]}, "cannot be loaded"),  # what the runtime needs is missing
    (lambda m: {k: v for k, v in m.items() if k != "input_size"}, "cannot be loaded"),
    (lambda m: {k: v for k, v in m.items() if k != "name"}, "cannot be loaded"),
    (lambda m: {**m, "name": "mobilesam"}, "names 'mobilesam'"),
    (lambda m: {**m, "files": [f for f in m["files"] if f["role"] == "encoder"]}, "lists no decoder"),
    (lambda m: {**m, "files": [{**f, "bytes": f["bytes"] + 1} for f in m["files"]]}, "does not carry"),
    (lambda m: {**m, "files": [{k: v for k, v in f.items() if k != "sha256"} for f in m["files"]]}, "does not carry"),
])
def test_signed_bundle_the_runtime_cannot_load_is_refused(installed, tmp_path, keys, edit, match) -> None:
    """A correctly signed bundle whose model manifest the runtime would refuse never goes live."""
    src = model_folder(tmp_path / "bad", "6")
    (src / "manifest.json").write_text(json.dumps(edit(json.loads((src / "manifest.json").read_text()))))
    out = tmp_path / "bad.glsb"
    make_bundle([src], out, "model", FAMILY, "6", load_private_key(keys[0]))
    with pytest.raises(UpdateError, match=match):
        installed.install(out)
    assert_running(installed, "2")


def test_concurrent_installs_are_serialised(installed: ModelUpdates, tmp_path: Path, keys) -> None:
    """While one install (here the update thread) is between steps, another install, a rollback,
    a prune or a recovery is refused and changes nothing; the first then completes."""
    b3, b4 = bundle(tmp_path / "a", keys[0], "3"), bundle(tmp_path / "b", keys[0], "4")
    paused, resume = threading.Event(), threading.Event()
    result: dict = {}

    def hook(step: str) -> None:
        if step == "moved":
            paused.set()
            resume.wait(10)

    def first() -> None:
        try:
            result["info"] = installed.install(b3, hook=hook)
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert paused.wait(10)
        other = store_at(installed.root, keys[1])  # as a second process would build it
        other.lock_wait_s = 0.2
        for action in (lambda: other.install(b4), other.rollback, other.prune, other.recover,
                       lambda: install_from_server(load_config(environ={}), other)):
            with pytest.raises(UpdateError, match="Another install is running"):
                action()
        assert (installed.root / "3").is_dir() and any((installed.root / ".incoming").iterdir()) is False
    finally:
        resume.set()
        thread.join(10)
    assert "error" not in result, result.get("error")
    assert_running(installed, "3")
    assert installed.previous_version() == "2"
    assert other.install(b4).version == "4"  # the lock is free again
    assert_running(installed, "4")


def test_dev_key_is_recognised_by_key_and_refused_unless_allowed(tmp_path: Path, caplog) -> None:
    """A copy of the development .pub under another path is still the dev key: installs are
    refused unless [updates] allow_dev_key; verification and the warning still happen."""
    repo = Path(__file__).resolve().parents[2]
    copy = tmp_path / "updates.pub"
    copy.write_bytes((repo / "appliance/sync/keys/dev_ed25519.pub").read_bytes())
    out = tmp_path / "dev-2.glsb"
    make_bundle([model_folder(tmp_path, "2")], out, BundleKind.MODEL, FAMILY, "2",
                load_private_key(repo / "firmware_scripts/dev-keys/dev_ed25519.pem"))
    env = {"GLANCESEG_DATA_DIR": str(tmp_path / "data"), "GLANCESEG_UPDATES_PUBLIC_KEY": str(copy),
           "GLANCESEG_MODEL_DIR": str(tmp_path / "nomodels")}
    store = model_store(load_config(environ=env))
    assert "DEVELOPMENT key" in caplog.text
    with pytest.raises(UpdateError, match="DEVELOPMENT update key"):
        store.install(out)
    assert store.current_version() is None
    allowed = model_store(load_config(environ={**env, "GLANCESEG_UPDATES_ALLOW_DEV_KEY": "1"}))
    assert allowed.install(out).version == "2"
    assert_running(allowed, "2")
    own = store_at(tmp_path / "other", keys_for(tmp_path)[1])  # any other key installs as before
    assert not own.allow_dev_key


def keys_for(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub = tmp_path / "o.pem", tmp_path / "o.pub"
    generate_keypair(priv, pub)
    return priv, pub


def _tar(dest: Path, members: list) -> Path:
    """Write a tar of (name, bytes, type) members (GNU format, so sparse headers are possible)."""
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, type_ in members:
            info = tarfile.TarInfo(name)
            info.size, info.type = len(data), type_
            tar.addfile(info, io.BytesIO(data))
    return dest


def test_nothing_is_staged_before_the_signature_verifies(installed: ModelUpdates, tmp_path: Path, keys,
                                                         monkeypatch) -> None:
    """An unsigned or foreign bundle, or one whose payload comes first, is refused before any
    payload byte is written; only members the signed manifest lists, at their signed size, are
    copied; sparse members are refused."""
    from appliance.sync import bundles

    copied: list[str] = []
    real = bundles._copy_stream
    monkeypatch.setattr(bundles, "_copy_stream", lambda src, dest, limit: (copied.append(dest.name),
                                                                           real(src, dest, limit)))
    good = bundle(tmp_path, keys[0], "3")
    with tarfile.open(good) as tar:
        parts = {m.name: tar.extractfile(m).read() for m in tar}
    reg = tarfile.REGTYPE
    foreign = bundle(tmp_path / "f", keys_for(tmp_path)[0], "3")
    cases = {
        "payload first": [("encoder.onnx", parts["encoder.onnx"], reg), ("bundle.json", parts["bundle.json"], reg),
                          ("bundle.sig", parts["bundle.sig"], reg)],
        "no signature": [("bundle.json", parts["bundle.json"], reg), ("encoder.onnx", parts["encoder.onnx"], reg)],
        "sparse": [("bundle.json", parts["bundle.json"], reg), ("bundle.sig", parts["bundle.sig"], reg),
                   ("encoder.onnx", b"", tarfile.GNUTYPE_SPARSE)],
        "unlisted": [("bundle.json", parts["bundle.json"], reg), ("bundle.sig", parts["bundle.sig"], reg),
                     ("extra.onnx", b"x" * 4096, reg)],
        "wrong size": [("bundle.json", parts["bundle.json"], reg), ("bundle.sig", parts["bundle.sig"], reg),
                       ("encoder.onnx", parts["encoder.onnx"] + b"more", reg)],
    }
    for label, members in cases.items():
        copied.clear()
        with pytest.raises(UpdateError):
            installed.install(_tar(tmp_path / f"{label}.glsb", members))
        assert not set(copied) - {"bundle.json", "bundle.sig"}, label
    copied.clear()
    with pytest.raises(UpdateError, match="signature"):
        installed.install(foreign)
    assert copied == [], "a foreign bundle wrote files"
    folder = tmp_path / "folder-bundle"
    folder.mkdir()
    for name, data in parts.items():
        (folder / name).write_bytes(data)
    (folder / "stray.bin").write_bytes(b"x" * 4096)
    copied.clear()
    with pytest.raises(UpdateError, match="does not list"):
        installed.install(folder)
    assert copied == []
    assert_running(installed, "2")
    assert not any((installed.root / ".incoming").glob("*"))
    assert installed.install(good).version == "3"  # the well-formed bundle still installs


def test_download_is_capped(installed: ModelUpdates, tmp_path: Path, keys, monkeypatch) -> None:
    from appliance.sync import model_updates

    served = tmp_path / "served"
    served.mkdir()
    bundle(tmp_path / "big", keys[0], "3", payload_bytes=1_200_000).rename(served / "m3.glsb")
    (served / "index.json").write_text(json.dumps({"bundles": [
        {"kind": "model", "family": FAMILY, "version": "3", "file": "m3.glsb"}]}))
    monkeypatch.setattr(model_updates, "MAX_BUNDLE_BYTES", 0)  # the cap is then the 2 MiB allowance
    handler = lambda *a, **kw: _QuietHandler(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = load_config(environ={"GLANCESEG_UPDATES_SERVER_URL": f"http://127.0.0.1:{server.server_port}/"})
        with pytest.raises(UpdateError, match="larger than any bundle"):
            install_from_server(config, installed)
    finally:
        server.shutdown()
        thread.join()
    assert not any((installed.root / ".downloads").glob("*"))
    assert_running(installed, "2")


@pytest.mark.parametrize("name", ["bundle.json\n", "encoder.onnx\n", "a\n"])
def test_names_and_versions_with_a_trailing_newline_are_refused(name: str) -> None:
    from appliance.sync.bundles import check_name, version_key

    with pytest.raises(UpdateError):
        check_name(name)
    with pytest.raises(UpdateError):
        version_key("3\n")


def test_rollback_to_shipped_cut_after_previous_is_linked_is_finished(tmp_path: Path, keys) -> None:
    """A power cut inside a rollback to shipped can leave current == previous; the next
    rollback must finish going to the shipped model, not return the same version forever."""
    store = store_at(tmp_path / "data" / "models", keys[1])
    store.install(bundle(tmp_path, keys[0], "2"))
    os.symlink("2", store.root / ".p")
    os.replace(store.root / ".p", store.root / PREVIOUS)  # the state the cut leaves
    assert store.current_version() == store.previous_version() == "2"
    assert store.rollback() == "1"
    assert store.current_version() is None and store.previous_version() == "2"


def test_a_newer_base_image_retires_the_older_installed_release(tmp_path: Path, keys) -> None:
    # A re-flash to base image 0.3.0 kept /var/lib: `current` still named the installed 0.3.0
    # (or older) release, first on PYTHONPATH, so the old code went on running, silently.
    store = software_releases(tmp_path, keys, "0.2.0", "0.3.0")
    newer_base = SoftwareUpdates(store.root, store.public_key, BundleKind.SOFTWARE, "glanceseg", "0.2.5")
    assert newer_base.retire_superseded() is None  # 0.3.0 is still newer than the base: it stays
    assert newer_base.current_version() == "0.3.0" and newer_base.previous_version() is None
    assert not (store.root / "0.2.0").exists()  # nothing older than the base to roll back to
    assert newer_base.rollback() == "0.2.5" and newer_base.current_version() is None
    store = software_releases(tmp_path / "again", keys, "0.2.0", "0.3.0")
    rebased = SoftwareUpdates(store.root, store.public_key, BundleKind.SOFTWARE, "glanceseg", "0.3.0")
    assert rebased.retire_superseded() == "0.3.0"
    assert rebased.current_version() is None and rebased.previous_version() is None
    assert sorted(p.name for p in store.root.iterdir() if not p.name.startswith(".")) == []
    with pytest.raises(UpdateError, match="no previous version"):
        rebased.rollback()
    assert rebased.retire_superseded() is None  # idempotent: every start of the service runs it


def test_the_service_retires_a_superseded_release_with_the_base_images_code() -> None:
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "glanceseg.service").read_text()
    pre = [line for line in unit.splitlines() if line.startswith("ExecStartPre=")]
    assert any("-u PYTHONPATH" in line and "software reconcile" in line for line in pre)


def test_sign_and_install_name_the_bundle_hash_apart_from_the_model_manifest_hash(tmp_path: Path, keys, capsys):
    # `models check`, `status` and lesions.json's model.sha256 give manifest.json's sha256; sign and
    # install print bundle.json's, which differs, so calling both "manifest sha256" made a good
    # install look like the wrong model to a technician comparing the two.
    priv, pub = keys
    config = load_config(environ={"GLANCESEG_DATA_DIR": str(tmp_path / "data"),
                                  "GLANCESEG_UPDATES_PUBLIC_KEY": str(pub),
                                  "GLANCESEG_MODEL_DIR": str(tmp_path / "nomodels")})
    out = tmp_path / "m2.glsb"
    for argv in (["models", "sign", str(model_folder(tmp_path, "2")), "--key", str(priv), "--version", "2",
                  "--out", str(out)], ["models", "install", str(out)]):
        args = _parser().parse_args(argv)
        assert args.handler(args, config) == 0
    printed = capsys.readouterr().out
    bundle_sha = hashlib.sha256(tarfile.open(out).extractfile("bundle.json").read()).hexdigest()
    assert printed.count(f"bundle sha256 {bundle_sha}") == 2 and "manifest sha256" not in printed


def test_plain_http_is_allowed_for_the_hosts_the_dicomweb_client_calls_loopback() -> None:
    # One rule for "this machine only" (appliance.sync.dicomweb.is_loopback); the update
    # client's own copy refused localhost.localdomain, which the DICOMweb client accepts.
    from appliance.sync.model_updates import _check_url

    for url in ("http://localhost.localdomain:9/u/", "http://LOCALHOST:9/u/", "http://[::1]:9/u/"):
        _check_url(url)
    with pytest.raises(UpdateError, match="https"):
        _check_url("http://updates.example/u/")
