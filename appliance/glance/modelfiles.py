"""The model folder: manifest, verified model files, and where the folder is.

The committed ONNX files are the reference. The appliance loads a model file only after
its sha256 matches ``manifest.json``, so a truncated copy, a disk error or a tampered file
is refused with a message saying which file and what to do, never run silently.

Folder resolution: ``<data_dir>/models/current`` when it exists (a signed model update
installed it), else ``config.model.dir`` (the models committed with the software).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import ModelError
from appliance.hashing import sha256_bytes

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ROLES = ("encoder", "decoder")
_REBUILD_HINT = (
    "Restore it from the software release (git checkout models/), or rebuild it with "
    "`.venv-build/bin/python models/build.py --write`."
)


def _repair_hint(model_dir: Path) -> str:
    """Say how to repair ``model_dir``: an installed update (it holds the signed ``bundle.json``)
    is repaired by rollback or re-installing its bundle, never by ``git checkout models/``,
    which does not touch ``<data_dir>/models``. A bundle still being checked (under
    ``.incoming``) is not installed: its refusal needs no repair hint."""
    if Path(model_dir).resolve().parent.name == ".incoming":
        return "The bundle is refused; nothing was installed."
    if (Path(model_dir) / "bundle.json").is_file():
        return (f"This is installed model update {Path(model_dir).resolve().name}: run `glanceseg models "
                "rollback` to return to the previous model, or re-install its bundle with `glanceseg models "
                "install`.")
    return _REBUILD_HINT


def resolve_model_dir(config: Config) -> Path:
    """Return the model folder in force.

    ``<data_dir>/models/current`` (installed by a verified model update) wins over
    ``config.model.dir`` (the committed models), so an update survives a software reinstall.

    Raises
    ------
    ModelError
        If ``current`` exists but points at no folder. Why not fall back to the shipped
        model: that would silently run another model than the one reported as installed.
    """
    current = config.data_dir / "models" / "current"
    if current.is_dir():
        return current
    if current.is_symlink():
        raise ModelError(f"{current} points at a missing model version ({_readlink(current)}). "
                         "Run `glanceseg models rollback` to return to the previous model.")
    return Path(config.model.dir).expanduser()


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


@dataclass(frozen=True)
class ModelFiles:
    """A loaded, parsed manifest and the folder it describes.

    Attributes
    ----------
    dir
        The model folder.
    manifest
        The parsed ``manifest.json``.
    manifest_sha256
        sha256 of ``manifest.json`` exactly as read (what ``lesions.json`` reports as
        ``model.sha256``).
    """

    dir: Path
    manifest: dict[str, Any] = field(repr=False)
    manifest_sha256: str

    @property
    def name(self) -> str:
        """str: the model family (``"litemedsam"``)."""
        return str(self.manifest.get("name", "unknown"))

    @property
    def input_size(self) -> int:
        """int: the square input side S in px the encoder takes."""
        return int(self.manifest["input_size"])

    def entry(self, role: str, variant: str) -> dict[str, Any]:
        """Return the manifest entry of one file.

        Raises
        ------
        ModelError
            If the manifest lists no such file.
        """
        for item in self.manifest.get("files", []):
            if item.get("role") == role and item.get("variant") == variant:
                return item
        variants = sorted({str(i.get("variant")) for i in self.manifest.get("files", []) if i.get("role") == role})
        raise ModelError(
            f"{self.dir / MANIFEST} lists no {role} of variant {variant!r} (it has: "
            f"{', '.join(variants) or 'none'}). Set [model] variant to one of those."
        )

    def read_verified(self, role: str, variant: str) -> bytes:
        """Read one model file and check its size and sha256 against the manifest.

        The bytes returned are the ones hashed (onnxruntime is given them directly), so
        nothing can change between the check and the load.

        Raises
        ------
        ModelError
            If the file is missing, unreadable, or its size or sha256 differ.
        """
        item = self.entry(role, variant)
        path = self.dir / str(item["file"])
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelError(f"Model file {path} is missing. {_repair_hint(self.dir)}") from exc
        except OSError as exc:
            raise ModelError(f"Model file {path} cannot be read ({exc.strerror}). {_repair_hint(self.dir)}") from exc
        digest = sha256_bytes(data)
        if len(data) != int(item["bytes"]) or digest != item["sha256"]:
            raise ModelError(
                f"Model file {path} has been altered or damaged: sha256 {digest[:12]}… "
                f"({len(data)} bytes), but {MANIFEST} expects {str(item['sha256'])[:12]}… "
                f"({item['bytes']} bytes). The appliance refuses to run it. {_repair_hint(self.dir)}"
            )
        logger.debug("verified %s (%s)", path.name, digest[:12])
        return data


def load_model_files(model_dir: Path) -> ModelFiles:
    """Read and check the manifest of a model folder (file contents are checked on load).

    Parameters
    ----------
    model_dir
        Folder holding ``manifest.json`` and the ONNX files it lists.

    Raises
    ------
    ModelError
        If the manifest is missing, not JSON, or lacks the keys the runtime needs.
    """
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"Model manifest {path} is missing. {_repair_hint(model_dir)}") from exc
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"Model manifest {path} is not valid JSON ({exc}). {_repair_hint(model_dir)}") from exc
    missing = [k for k in ("name", "input_size", "files") if k not in manifest]
    if missing:
        raise ModelError(f"Model manifest {path} lacks {', '.join(missing)}. {_repair_hint(model_dir)}")
    files = ModelFiles(model_dir, manifest, sha256_bytes(raw))
    logger.info("model %s from %s (manifest %s)", files.name, model_dir, files.manifest_sha256[:12])
    return files


def load_for_config(config: Config) -> ModelFiles:
    """Resolve the model folder for ``config`` and load its manifest."""
    return load_model_files(resolve_model_dir(config))


def verify_all(files: ModelFiles) -> list[str]:
    """Verify every file the manifest lists (``make run``'s model check).

    Returns
    -------
    list of str
        The verified file names.

    Raises
    ------
    ModelError
        At the first missing or altered file.
    """
    names = []
    for item in files.manifest.get("files", []):
        files.read_verified(str(item["role"]), str(item["variant"]))
        names.append(str(item["file"]))
    return names
