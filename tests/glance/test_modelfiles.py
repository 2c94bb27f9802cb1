"""The model folder: resolution, manifest parsing, and refusal of missing or altered files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from appliance.errors import ModelError
from appliance.glance.modelfiles import load_for_config, load_model_files, resolve_model_dir, verify_all

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


def _folder(tmp_path: Path, payload: bytes = b"onnx bytes stand-in") -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "enc.onnx").write_bytes(payload)
    manifest = {"name": "litemedsam", "input_size": 256, "prompt_kinds": ["box"], "files": [
        {"role": "encoder", "variant": "int8", "file": "enc.onnx", "bytes": len(payload),
         "sha256": hashlib.sha256(payload).hexdigest()}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_verified_read_returns_the_hashed_bytes(tmp_path):
    files = load_model_files(_folder(tmp_path))
    assert files.read_verified("encoder", "int8") == b"onnx bytes stand-in"
    assert files.manifest_sha256 == hashlib.sha256((tmp_path / "m" / "manifest.json").read_bytes()).hexdigest()
    assert files.name == "litemedsam" and files.input_size == 256


def test_altered_file_is_refused_naming_it(tmp_path):
    folder = _folder(tmp_path)
    (folder / "enc.onnx").write_bytes(b"onnx bytes stand-iN")  # same size, one byte changed
    with pytest.raises(ModelError, match=r"enc\.onnx has been altered.*build\.py --write"):
        load_model_files(folder).read_verified("encoder", "int8")


def test_missing_file_and_missing_manifest_are_refused(tmp_path):
    folder = _folder(tmp_path)
    (folder / "enc.onnx").unlink()
    with pytest.raises(ModelError, match=r"enc\.onnx is missing"):
        verify_all(load_model_files(folder))
    (folder / "manifest.json").unlink()
    with pytest.raises(ModelError, match="manifest.*missing"):
        load_model_files(folder)


def test_unknown_variant_lists_the_ones_there(tmp_path):
    with pytest.raises(ModelError, match="variant 'fp16'.*int8"):
        load_model_files(_folder(tmp_path)).entry("encoder", "fp16")


def test_installed_update_wins_over_committed_models(config, tmp_path):
    assert resolve_model_dir(config) == Path(config.model.dir)
    current = config.data_dir / "models" / "current"
    current.mkdir(parents=True)
    assert resolve_model_dir(config) == current
    with pytest.raises(ModelError, match="manifest"):
        load_for_config(config)


def test_dangling_current_is_an_error_not_the_shipped_model(config):
    """A ``current`` link whose version folder is gone must not silently run the shipped model."""
    root = config.data_dir / "models"
    root.mkdir(parents=True)
    (root / "current").symlink_to("2")
    with pytest.raises(ModelError, match="models rollback"):
        resolve_model_dir(config)


def test_damaged_installed_update_says_rollback_not_git_checkout(tmp_path):
    """An installed update (it holds the signed bundle.json) is repaired by rollback or
    re-install; ``git checkout models/`` would not touch it."""
    folder = _folder(tmp_path)
    (folder / "bundle.json").write_text("{}")
    (folder / "enc.onnx").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="models rollback") as err:
        load_model_files(folder).read_verified("encoder", "int8")
    assert "git checkout" not in str(err.value)
    (folder / "manifest.json").unlink()
    with pytest.raises(ModelError, match="re-install its bundle"):
        load_model_files(folder)
    staged = tmp_path / ".incoming" / "0123abcd"
    folder.rename(staged.parent.mkdir() or staged)
    with pytest.raises(ModelError, match="nothing was installed"):  # a bundle being checked
        load_model_files(staged)


def test_committed_models_verify():
    if not (REPO_MODELS / "manifest.json").exists():
        pytest.fail("models/manifest.json is not committed")
    files = load_model_files(REPO_MODELS)
    names = verify_all(files)
    assert {"litemedsam_encoder_int8.onnx", "litemedsam_decoder_int8.onnx"} <= set(names)
    assert files.manifest["source"]["checkpoint_sha256"].startswith("79d8c9dc")
