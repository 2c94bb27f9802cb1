"""How a segmentation result is kept on disk: a JSON document plus an ``.npz`` of lesion masks.

The JSON carries everything a report needs (lesions as the ``lesions.json`` contract writes them,
model name and sha256, gaze summary, grade, referral, per-lesion decisions); the ``.npz`` holds
each lesion's boolean crop under the key ``l<id>``. Both are verified by sha256 when read back, so
a corrupt file is reported rather than exported.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import StoreError
from appliance.glance.lesions import Lesion, SegmentationResult

logger = logging.getLogger(__name__)


def utc_now() -> str:
    """Return the wall clock as UTC ISO 8601 (display and retention only, never ordering)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class StoredResult:
    """A result read back from the store.

    Attributes
    ----------
    result
        The lesions (with mask crops) and model facts.
    mask_lesion_ids
        Ids of the lesions that form the result's mask (the shown ones for an automatic result,
        the clinician's final set for a reviewed one).
    payload
        The rest of the JSON document: ``kind``, ``gaze``, ``grade``, ``referral``, ``signed_by``,
        ``decisions`` (lesion id → ``accepted`` / ``rejected`` / ``added`` / ``not reviewed``).
    """

    result: SegmentationResult
    mask_lesion_ids: list[int]
    payload: dict[str, Any] = field(default_factory=dict)

    def mask(self) -> np.ndarray:
        """Return the H×W uint8 mask (255 on lesion pixels) of the result's mask lesions."""
        ids = set(self.mask_lesion_ids)
        return self.result.mask([l for l in self.result.lesions if l.id in ids])


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    return value


def build_result_files(
    result: SegmentationResult, mask_lesion_ids: list[int], payload: dict[str, Any]
) -> tuple[bytes, bytes]:
    """Serialise a result: ``(json_bytes, npz_bytes)``."""
    lesions = []
    crops: dict[str, np.ndarray] = {}
    for lesion in result.lesions:
        entry = lesion.to_json()
        entry["features"] = _jsonable(lesion.features)
        lesions.append(entry)
        if lesion.mask is not None:
            crops[f"l{int(lesion.id)}"] = np.asarray(lesion.mask, dtype=bool)
    doc = {
        "width": int(result.width),
        "height": int(result.height),
        "mode": result.mode,
        "display_threshold": float(result.display_threshold),
        "model": {"name": result.model_name, "sha256": result.model_sha256},
        "timings_ms": _jsonable(result.timings_ms),
        "um_per_px": result.um_per_px,
        "gradable": bool(result.gradable),
        "quality": _jsonable(result.quality),
        "quality_reasons": dict(result.quality_reasons),
        "lesions": lesions,
        "mask_lesion_ids": [int(i) for i in mask_lesion_ids],
        **_jsonable(payload),
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, **crops)
    return json.dumps(doc, sort_keys=True, indent=1).encode("utf-8"), buf.getvalue()


def _read_verified(path: Path, sha256: str) -> bytes:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise StoreError(f"The result file {Path(path).name} is missing.") from exc
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise StoreError(f"The result file {Path(path).name} is corrupt (checksum mismatch).")
    return raw


def load_stored_result(json_path: Path, json_sha: str, masks_path: Path, masks_sha: str) -> StoredResult:
    """Read a result written by :func:`build_result_files`, verifying both checksums."""
    doc = json.loads(_read_verified(json_path, json_sha))
    with np.load(io.BytesIO(_read_verified(masks_path, masks_sha))) as npz:
        crops = {k: npz[k] for k in npz.files}
    lesions = [
        Lesion(
            id=int(e["id"]), x=float(e["x"]), y=float(e["y"]), area_px=int(e["area_px"]),
            bbox=tuple(int(v) for v in e["bbox"]), score=float(e["score"]), source=str(e["source"]),
            mask=crops.get(f"l{int(e['id'])}"), features=dict(e.get("features", {})),
        )
        for e in doc["lesions"]
    ]
    result = SegmentationResult(
        width=int(doc["width"]), height=int(doc["height"]), mode=doc["mode"], lesions=lesions,
        display_threshold=float(doc["display_threshold"]), model_name=doc["model"]["name"],
        model_sha256=doc["model"]["sha256"], timings_ms=doc.get("timings_ms", {}),
        gradable=bool(doc.get("gradable", True)), quality=doc.get("quality", {}),
        quality_reasons=doc.get("quality_reasons", {}), um_per_px=doc.get("um_per_px"),
    )
    known = {"width", "height", "mode", "display_threshold", "model", "timings_ms", "gradable", "quality",
             "quality_reasons", "um_per_px", "lesions", "mask_lesion_ids"}
    payload = {k: v for k, v in doc.items() if k not in known}
    return StoredResult(result, [int(i) for i in doc["mask_lesion_ids"]], payload)


def final_lesions(
    auto: StoredResult, states: dict[int, str], added: list[Lesion]
) -> tuple[list[Lesion], dict[str, str]]:
    """Apply a clinician's decisions to an automatic result.

    The reviewed result is the clinician's: a lesion is in it when the clinician accepted or
    added it. A lesion left alone is not silently promoted to a clinical finding (the reader
    may never have looked there); it stays in the automatic result, which is delivered as
    well, and in the decision table as ``not reviewed``. Returns the final lesions and the
    decision table (lesion id as text → ``accepted`` / ``rejected`` / ``added`` /
    ``not reviewed``).
    """
    final: list[Lesion] = []
    table: dict[str, str] = {}
    for lesion in auto.result.lesions:
        state = states.get(int(lesion.id))
        table[str(lesion.id)] = {"accept": "accepted", "reject": "rejected"}.get(state or "", "not reviewed")
        if state == "accept":
            final.append(lesion)
    for lesion in added:
        table[str(lesion.id)] = "added"
        final.append(lesion)
    return final, table
