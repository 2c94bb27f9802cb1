"""Copies of a data set as another camera might have taken it, to see what the method depends on.

Why: the rankers were trained on IDRiD_01-12, one camera (Kowa VX-10α) and one archive's JPEG
settings. The independent checks, and a clinic, bring photographs from other cameras: lower
resolution, stronger compression, another white balance, haze from a cataract, under-exposure.
Each kind below changes one of these and keeps the masks aligned, so ``glanceseg eval`` on the
copy says how much that one change costs (figures: docs/performance.md, "Photographs unlike
IDRiD's")::

    .venv/bin/python -m appliance.eval.perturb ../shared/data/idrid-ma haze /tmp/haze --split report
    .venv/bin/glanceseg eval /tmp/haze --split report --variants saliency

Kinds (``KINDS``): ``none`` (the control: only written again as JPEG, quality 95, as every
copy is), ``scale`` (area resampling by ``--amount``, masks resampled with it),
``haze`` (``0.6 × I + 40``: contrast lost to scatter, margin grey), ``gamma`` (``I^1.6``,
under-exposed), ``jpeg`` (re-encoded at quality 50), ``blur`` (Gaussian, σ 1.5 px),
``white-balance`` (red × 0.8, green × 0.9, blue × 1.25).
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from appliance.eval.dataset import DatasetItem, iter_split

logger = logging.getLogger(__name__)

#: JPEG quality of every written photograph except ``jpeg``'s (high, so writing costs little).
WRITE_QUALITY = 95


def _lut(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    table = np.clip(np.rint(fn(np.arange(256, dtype=np.float64))), 0, 255).astype(np.uint8)
    return lambda rgb: cv2.LUT(rgb, table)


#: kind -> function of an RGB photograph (``scale`` and ``jpeg`` are handled apart)
KINDS: dict[str, Optional[Callable[[np.ndarray], np.ndarray]]] = {
    "none": lambda rgb: rgb,
    "scale": None,
    "haze": _lut(lambda v: 0.6 * v + 40.0),
    "gamma": _lut(lambda v: 255.0 * (v / 255.0) ** 1.6),
    "jpeg": None,
    "blur": lambda rgb: cv2.GaussianBlur(rgb, (0, 0), 1.5),
    "white-balance": lambda rgb: np.clip(rgb * np.array([0.8, 0.9, 1.25]), 0, 255).astype(np.uint8),
}


def perturb_item(item: DatasetItem, kind: str, out_dir: Path, amount: float = 0.5) -> dict[str, object]:
    """Write ``item``'s photograph (and mask) changed by ``kind`` under ``out_dir``; return its index row."""
    if kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r}; use one of {', '.join(KINDS)}.")
    rgb, mask = item.load_rgb(), item.load_mask()
    quality = 50 if kind == "jpeg" else WRITE_QUALITY
    if kind == "scale":
        if not 0.05 <= amount <= 4.0:
            raise ValueError(f"--amount {amount} is no sensible scale factor.")
        size = (max(1, round(rgb.shape[1] * amount)), max(1, round(rgb.shape[0] * amount)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        # An MA pixel survives where it covered at least 30 % of the new pixel: small MAs keep
        # a pixel at half size instead of vanishing from the ground truth.
        mask = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.3
    elif KINDS[kind] is not None:
        rgb = KINDS[kind](rgb)
    image_rel, mask_rel = f"images/{item.id}.jpg", f"masks/{item.id}_MA.png"
    if not cv2.imwrite(str(out_dir / image_rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                       [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"Cannot write {out_dir / image_rel}.")
    cv2.imwrite(str(out_dir / mask_rel), mask.astype(np.uint8) * 255)
    return {"id": item.id, "image": image_rel, "mask": mask_rel, "width": rgb.shape[1], "height": rgb.shape[0]}


def perturb_dataset(root: Path, kind: str, out_dir: Path, split: str = "all", amount: float = 0.5) -> int:
    """Write a perturbed copy of ``root``'s ``split`` to ``out_dir`` with its ``index.csv``; return the count."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(exist_ok=True)
    rows = [perturb_item(item, kind, out_dir, amount) for item in iter_split(Path(root), split)]
    with open(out_dir / "index.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "image", "mask", "width", "height"])
        writer.writeheader()
        writer.writerows(rows)
    logger.info("%s: %d photographs written to %s", kind, len(rows), out_dir)
    return len(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: ``python -m appliance.eval.perturb DATASET KIND OUT [--split S] [--amount A]``."""
    parser = argparse.ArgumentParser(prog="python -m appliance.eval.perturb", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="folder laid out like idrid-ma")
    parser.add_argument("kind", choices=list(KINDS))
    parser.add_argument("out", type=Path, help="folder for the copy (images/, masks/, index.csv)")
    parser.add_argument("--split", choices=("report", "tune", "all"), default="all")
    parser.add_argument("--amount", type=float, default=0.5, help="scale factor for kind scale (default 0.5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    perturb_dataset(args.dataset, args.kind, args.out, args.split, args.amount)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
