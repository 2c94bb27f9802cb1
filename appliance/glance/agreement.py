"""Fundus test tiles with microaneurysm box prompts, input normalisation, and mask agreement.

Pure numpy + OpenCV, so the model build script (run in ``.venv-build``, which does not have
the appliance installed) and the appliance's benchmark measure int8-vs-fp32 agreement on
exactly the same tiles and with exactly the same normalisation as the runtime applies.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from appliance.eval.dataset import TUNE_IDS
from appliance.imaging.tiling import TileGrid

logger = logging.getLogger(__name__)

#: IDRiD_09-12: where the build measures int8 against fp32 (still the tuning split; the
#: build calibrates on IDRiD_01-08).
AGREEMENT_IDS = TUNE_IDS[8:]
BOX_MARGIN_PX = 4


def normalise_tile(tile_rgb: np.ndarray) -> np.ndarray:
    """LiteMedSAM's input normalisation: per-image min-max to [0, 1].

    Parameters
    ----------
    tile_rgb
        SxSx3 uint8 RGB tile.

    Returns
    -------
    numpy.ndarray
        1x3xSxS float32 in [0, 1] (NCHW), what the encoder graph's ``image`` input takes.
    """
    if tile_rgb.ndim != 3 or tile_rgb.shape[2] != 3:
        raise ValueError(f"A tile must be SxSx3 RGB, not shape {tile_rgb.shape}.")
    img = tile_rgb.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / max(hi - lo, 1e-8)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


@dataclass
class PromptTile:
    """A fundus tile and box prompts around the real MAs in it.

    Attributes
    ----------
    name
        ``"IDRiD_03/r4c7"``: image id and grid cell.
    rgb
        SxSx3 uint8 RGB tile, cut from the fixed grid (zero-padded past the image edge).
    boxes
        Kx4 float32 ``(x0, y0, x1, y1)`` in tile px: each MA's bounding box grown by
        :data:`BOX_MARGIN_PX`.
    """

    name: str
    rgb: np.ndarray
    boxes: np.ndarray


def idrid_prompt_tiles(data_dir: Path, ids: Sequence[str], tiles_per_image: int = 2,
                       size: int = 256, overlap: int = 64, max_boxes: int = 8) -> list[PromptTile]:
    """Cut the tiles with the most annotated MAs from some IDRiD photographs.

    Parameters
    ----------
    data_dir
        A folder laid out like ``shared/data/idrid-ma`` (``index.csv``, images, masks).
    ids
        Image ids to use (keep to :data:`TUNE_IDS` for calibration and checks).
    tiles_per_image, max_boxes
        How many tiles per photograph, and at most how many box prompts per tile.
    size, overlap
        The tile grid (the model's input size and the appliance's overlap).

    Returns
    -------
    list of PromptTile
        Deterministic: the same data gives the same tiles in the same order.
    """
    data_dir = Path(data_dir)
    with open(data_dir / "index.csv", newline="") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    out: list[PromptTile] = []
    for image_id in ids:
        if image_id not in rows:
            continue
        row = rows[image_id]
        bgr = cv2.imread(str(data_dir / row["image"]), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(data_dir / row["mask"]), cv2.IMREAD_GRAYSCALE)
        if bgr is None or mask is None:
            raise FileNotFoundError(f"Cannot read {image_id} under {data_dir}.")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        grid = TileGrid(rgb.shape[1], rgb.shape[0], size, overlap)
        n, _, stats, cents = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
        per_tile: dict[tuple[int, int], list[np.ndarray]] = {}
        for i in range(1, n):
            x, y, w, h = stats[i, :4]
            tile = grid.best_tile(float(cents[i, 0]), float(cents[i, 1]))
            box = np.array([x - BOX_MARGIN_PX - tile.x0, y - BOX_MARGIN_PX - tile.y0,
                            x + w + BOX_MARGIN_PX - tile.x0, y + h + BOX_MARGIN_PX - tile.y0], np.float32)
            per_tile.setdefault(tile.key, []).append(np.clip(box, 0, size - 1))
        ranked = sorted(per_tile.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:tiles_per_image]
        for key, boxes in ranked:
            tile = grid.tile(*key)
            out.append(PromptTile(f"{image_id}/r{key[0]}c{key[1]}", grid.cut(rgb, tile),
                                  np.stack(boxes[:max_boxes]).astype(np.float32)))
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty (they agree)."""
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def mean_mask_iou(logits_a: Sequence[np.ndarray], logits_b: Sequence[np.ndarray]) -> float:
    """Mean per-prompt IoU of ``logits > 0`` over matching lists of Nx1xHxW or NxHxW logits."""
    ious = [mask_iou(a[i] > 0, b[i] > 0) for a, b in zip(logits_a, logits_b) for i in range(len(a))]
    return float(np.mean(ious)) if ious else float("nan")
