"""Example arrays for fine-tuning: unique tiles, prompt boxes in tile px, labels, target masks.

Numpy/OpenCV only (torch enters in :mod:`appliance.finetune.train`). Sources:

- a candidate set (:mod:`appliance.finetune.candidate_set`) over an ``idrid-ma``-like data
  set: candidates (accepted = hit an MA, rejected = hit none), MAs no candidate found
  (added), and random FOV spots far from any MA (only for the MA-vs-spot AUC);
- an annotations export (``glanceseg annotations export``): the clinicians' own decisions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Optional, Sequence

import cv2
import numpy as np

from appliance.imaging.tiling import TileGrid

logger = logging.getLogger(__name__)

TILE = 256
OVERLAP = 64
#: Kinds of example.
CANDIDATE, ADDED, SPOT = 0, 1, 2
SPOTS_PER_IMAGE = 40
SPOT_HALF_PX = 8.0
SPOT_CLEARANCE_PX = 40.0


@dataclass
class ExampleSet:
    """Examples of one split.

    Attributes
    ----------
    tiles
        Tx256x256x3 uint8 RGB tiles (each cut once).
    tile_truth
        Tx256x256 uint8, 1 on annotated MA pixels (zeros where unknown, e.g. exports).
    tile_of
        N int: each example's tile index.
    boxes
        Nx4 float32 prompt boxes in tile px.
    labels
        N float32, 1 for an MA, 0 otherwise.
    kinds
        N int8: CANDIDATE, ADDED or SPOT.
    image_of
        N int: index into ``image_ids``.
    xy
        Nx2 float64 centres in image px (for the FROC).
    saliency
        N float64: the candidate's saliency z (NaN for added and spot examples).
    image_ids, truth
        Per image: id and ground-truth ``(centers Nx2, radii N)`` for the FROC.
    """

    tiles: np.ndarray
    tile_truth: np.ndarray
    tile_of: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray
    image_of: np.ndarray
    xy: np.ndarray
    saliency: np.ndarray
    image_ids: list[str] = field(default_factory=list)
    truth: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, keep: np.ndarray) -> "ExampleSet":
        """Return the examples where ``keep`` (bool N) is True (tiles shared, not copied)."""
        return ExampleSet(self.tiles, self.tile_truth, self.tile_of[keep], self.boxes[keep], self.labels[keep],
                          self.kinds[keep], self.image_of[keep], self.xy[keep], self.saliency[keep],
                          self.image_ids, self.truth)


def _spots(mask: np.ndarray, fov_mask: np.ndarray, centers: np.ndarray, rng: np.random.Generator,
           count: int) -> np.ndarray:
    ys, xs = np.nonzero(fov_mask[::8, ::8])
    order = rng.permutation(len(xs))
    out = []
    for i in order:
        x, y = xs[i] * 8.0 + 4.0, ys[i] * 8.0 + 4.0
        if len(centers) and np.min(np.hypot(centers[:, 0] - x, centers[:, 1] - y)) < SPOT_CLEARANCE_PX:
            continue
        out.append((x, y))
        if len(out) == count:
            break
    return np.array(out, np.float64).reshape(-1, 2)


def from_candidate_set(set_path: Path, data_dir: Path, ids: Sequence[str], seed: int = 0,
                       spots_per_image: int = SPOTS_PER_IMAGE) -> ExampleSet:
    """Build the examples of ``ids`` from a candidate set and the photographs it names.

    Every annotated MA also gets an ``ADDED`` example prompted with its own box (mask
    supervision with an exact box, and the Dice figure); ``spots_per_image`` random FOV
    spots at least 40 px from any MA are added for the MA-vs-spot AUC (never trained on).
    """
    from appliance.imaging.fov import find_fov

    doc = json.loads(Path(set_path).read_text())
    tiles: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    rows: list[tuple] = []
    image_ids, truth_list = [], []
    for img_index, image_id in enumerate(i for i in ids if i in doc["images"]):
        entry = doc["images"][image_id]
        bgr = cv2.imread(str(Path(data_dir) / entry["image"]), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(Path(data_dir) / entry["mask"]), cv2.IMREAD_GRAYSCALE)
        if bgr is None or mask is None:
            raise FileNotFoundError(f"Cannot read {image_id} under {data_dir}.")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        grid = TileGrid(rgb.shape[1], rgb.shape[0], TILE, OVERLAP)
        tile_index: dict[tuple[int, int], int] = {}
        centers = np.array([[t["x"], t["y"]] for t in entry["truth"]], np.float64).reshape(-1, 2)
        image_ids.append(image_id)
        truth_list.append((centers, np.array([t["r"] for t in entry["truth"]], np.float64)))

        def add(x: float, y: float, box: Sequence[float], label: float, kind: int, sal: float) -> None:
            tile = grid.best_tile(x, y)
            if tile.key not in tile_index:
                tile_index[tile.key] = len(tiles)
                tiles.append(grid.cut(rgb, tile))
                truths.append((grid.cut(mask, tile) > 0).astype(np.uint8))
            b = np.clip(np.array(box, np.float32) - [tile.x0, tile.y0, tile.x0, tile.y0], 0, TILE - 1)
            rows.append((tile_index[tile.key], b, label, kind, img_index, x, y, sal))

        for c in entry["candidates"]:
            add(c["x"], c["y"], c["box"], float(c["hit"]), CANDIDATE, c["features"].get("z", np.nan))
        for t in entry["truth"]:
            x0, y0, x1, y1 = t["bbox"]
            add(t["x"], t["y"], [x0 - 4, y0 - 4, x1 + 4, y1 + 4], 1.0, ADDED, np.nan)
        if spots_per_image > 0:
            rng = np.random.default_rng([seed, img_index])
            fov = find_fov(rgb)
            for x, y in _spots(mask, fov.mask, centers, rng, spots_per_image):
                add(x, y, [x - SPOT_HALF_PX, y - SPOT_HALF_PX, x + SPOT_HALF_PX, y + SPOT_HALF_PX], 0.0, SPOT, np.nan)
        logger.info("%s: %d tiles so far, %d examples so far", image_id, len(tiles), len(rows))
    return _assemble(tiles, truths, rows, image_ids, truth_list)


EXPORT_FORMAT = "glanceseg-annotations/1"
_EXPORT_NEEDS = ("tile", "mask", "label", "decision", "box_tile", "center_image", "features", "model", "image_sha256")


def read_export(export_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read and check an annotations export; return its manifest and its example lines.

    Why checked: a truncated copy or a hand-edited file must stop the build with the line at
    fault, not train on part of it or fail deep inside OpenCV.

    Raises
    ------
    ValueError
        If the manifest is missing or of another format, a line is not a complete example,
        or the number of lines differs from the manifest's ``count``.
    """
    export_dir = Path(export_dir)
    try:
        manifest = json.loads((export_dir / "manifest.json").read_text())
        text = (export_dir / "annotations.jsonl").read_text()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{export_dir} is not a readable annotations export ({exc}).") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{export_dir}/manifest.json is not of format {EXPORT_FORMAT}.")
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            ex = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{export_dir}/annotations.jsonl line {number} is not JSON ({exc}).") from exc
        if not isinstance(ex, dict) or any(k not in ex for k in _EXPORT_NEEDS):
            raise ValueError(f"{export_dir}/annotations.jsonl line {number} is not a complete example.")
        lines.append(ex)
    if len(lines) != manifest.get("count"):
        raise ValueError(f"{export_dir} holds {len(lines)} examples but its manifest says {manifest.get('count')}: "
                         "the copy is incomplete; export again.")
    return manifest, lines


def example_group(ex: dict[str, Any]) -> str:
    """The patient group of an export line (older exports: its photograph)."""
    return str(ex.get("group") or ex["image_sha256"][:16])


def split_groups(groups: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split patient groups into training and validation, never one group on both sides.

    Raises
    ------
    ValueError
        With fewer than two groups (nothing could be held out) or a fraction outside (0, 1).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("The validation fraction must lie between 0 and 1.")
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise ValueError(f"The annotations come from {len(unique)} patient(s); at least two are needed so that "
                         "validation is on patients never trained on.")
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    n_val = min(len(unique) - 1, max(1, int(round(len(unique) * val_fraction))))
    return sorted(order[n_val:]), sorted(order[:n_val])


def from_export(export_dir: Path, groups: Optional[Collection[str]] = None) -> ExampleSet:
    """Build examples from ``glanceseg annotations export DIR`` (labels from decisions).

    The exported mask of an accepted or added lesion is its target; a rejected one has none.
    ``groups`` keeps only the examples of those patient groups (:func:`split_groups`);
    ``image_of`` indexes the photographs (``image_ids``: their sha256).

    Raises
    ------
    ValueError
        If the export is incomplete or corrupt (:func:`read_export`) or a tile or mask is unreadable.
    """
    export_dir = Path(export_dir)
    _, lines = read_export(export_dir)
    tiles: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    rows: list[tuple] = []
    index: dict[str, int] = {}
    images: dict[str, int] = {}
    for ex in lines:
        if groups is not None and example_group(ex) not in groups:
            continue
        if ex["tile"] not in index:
            bgr = cv2.imread(str(export_dir / ex["tile"]), cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape[:2] != (TILE, TILE):
                raise ValueError(f"The tile {ex['tile']} of {export_dir} is missing or damaged.")
            index[ex["tile"]] = len(tiles)
            tiles.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            truths.append(np.zeros((TILE, TILE), np.uint8))
        t = index[ex["tile"]]
        if ex["label"]:
            mask = cv2.imread(str(export_dir / ex["mask"]), cv2.IMREAD_GRAYSCALE)
            if mask is None or mask.shape != (TILE, TILE):
                raise ValueError(f"The mask {ex['mask']} of {export_dir} is missing or damaged.")
            truths[t] |= (mask > 0).astype(np.uint8)
        kind = ADDED if ex["decision"] == "added" else CANDIDATE
        x, y = ex["center_image"]
        image = images.setdefault(ex["image_sha256"], len(images))
        rows.append((t, np.array(ex["box_tile"], np.float32), float(ex["label"]), kind, image, x, y,
                     float(ex["features"].get("z", np.nan))))
    return _assemble(tiles, truths, rows, list(images), [(np.zeros((0, 2)), np.zeros(0)) for _ in images])


def export_models(lines: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Which models proposed the exported candidates: manifest sha256 -> name, version, examples."""
    out: dict[str, dict[str, Any]] = {}
    for ex in lines:
        m = ex["model"]
        entry = out.setdefault(m.get("sha256", ""), {"name": m.get("name"), "version": m.get("version"), "examples": 0})
        entry["examples"] += 1
    return out


def _assemble(tiles: list, truths: list, rows: list, image_ids: list, truth_list: list) -> ExampleSet:
    if not rows:
        raise ValueError("No examples were found.")
    return ExampleSet(
        tiles=np.stack(tiles), tile_truth=np.stack(truths),
        tile_of=np.array([r[0] for r in rows], np.int64), boxes=np.stack([r[1] for r in rows]).astype(np.float32),
        labels=np.array([r[2] for r in rows], np.float32), kinds=np.array([r[3] for r in rows], np.int8),
        image_of=np.array([r[4] for r in rows], np.int64), xy=np.array([[r[5], r[6]] for r in rows], np.float64),
        saliency=np.array([r[7] for r in rows], np.float64), image_ids=image_ids, truth=truth_list)


def dataset_hash(examples: ExampleSet) -> str:
    """sha256 over the tiles, boxes and labels actually trained on (the lineage's data hash)."""
    import hashlib

    h = hashlib.sha256()
    for arr in (examples.tiles, examples.tile_of, examples.boxes, examples.labels):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()
