"""Evaluate segmentation over a data set: lesion FROC / CPM, pixel AUPR and Dice, per image.

What ``glanceseg eval`` runs. The scoring follows DESIGN.md exactly (see
:mod:`appliance.eval.froc`), so the figures here are the ones an independent check computes
from ``lesions.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from appliance.errors import ImageError
from appliance.eval.dataset import DatasetItem
from appliance.eval.froc import (
    CPM_FP_RATES, FrocResult, GroundTruth, PixelCurve, froc, ground_truth_from_mask, match_lesions,
)
from appliance.glance.lesions import SegmentationResult
from appliance.glance.outputs import score_map

logger = logging.getLogger(__name__)

#: Segments one data-set item; returns its result (and may write files as a side effect).
SegmentFn = Callable[[DatasetItem], SegmentationResult]


@dataclass
class ImageRow:
    """Per-image figures of one variant."""

    id: str
    n_truth: int
    n_lesions: int
    n_shown: int
    hits_shown: int
    dice: float
    seconds: float


@dataclass
class VariantReport:
    """Figures of one variant (e.g. model, saliency only) over the data set."""

    name: str
    froc: FrocResult
    aupr: float
    dice: float
    rows: list[ImageRow] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """Return the headline figures as plain JSON types."""
        return {
            "variant": self.name,
            "cpm": round(self.froc.cpm, 4),
            "sensitivity_at_fppi": {str(k): round(v, 4) for k, v in self.froc.sensitivity_at.items()},
            "pixel_aupr": round(self.aupr, 4),
            "pixel_dice": round(self.dice, 4),
            "n_images": self.froc.n_images,
            "n_truth": self.froc.n_truth,
            "n_lesions": self.froc.n_lesions,
        }


def lesion_arrays(result: SegmentationResult) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(xy (N, 2), scores (N,))`` of a result's lesions."""
    xy = np.array([[l.x, l.y] for l in result.lesions], dtype=np.float64).reshape(-1, 2)
    scores = np.array([l.score for l in result.lesions], dtype=np.float64)
    return xy, scores


def evaluate(items: Sequence[DatasetItem], variants: dict[str, SegmentFn], progress: bool = True) -> list[VariantReport]:
    """Run each variant on each item and score it.

    Parameters
    ----------
    items
        Data-set items (photograph + MA mask).
    variants
        Name → segmentation function.
    progress
        Show a progress bar on stderr.
    """
    reports = {name: VariantReport(name, froc=None, aupr=0.0, dice=0.0) for name in variants}  # type: ignore[arg-type]
    triples: dict[str, list[tuple[np.ndarray, np.ndarray, GroundTruth]]] = {name: [] for name in variants}
    curves = {name: PixelCurve() for name in variants}
    bar = tqdm(total=len(items) * len(variants), disable=not progress, desc="eval", unit="image")
    for item in items:
        mask = item.load_mask()
        truth = ground_truth_from_mask(mask)
        for name, segment in variants.items():
            start = time.perf_counter()
            result = segment(item)
            seconds = time.perf_counter() - start
            if mask.shape != (result.height, result.width):
                # A mask of another size cannot be lined up with the lesions: refuse it in one
                # sentence rather than fail deep in the pixel curve (or score misplaced MAs).
                raise ImageError(
                    f"{item.id}: the mask {item.mask_path.name} is {mask.shape[1]}x{mask.shape[0]} px but the "
                    f"photograph is {result.width}x{result.height} px; a mask must be the image's size.")
            xy, scores = lesion_arrays(result)
            triples[name].append((xy, scores, truth))
            image_dice = curves[name].add(score_map(result), mask, predicted=result.mask() > 0)
            shown = scores >= result.display_threshold
            hits = match_lesions(xy[shown], scores[shown], truth)
            reports[name].rows.append(ImageRow(item.id, len(truth), len(scores), int(shown.sum()),
                                               int(hits.sum()), image_dice, seconds))
            bar.update(1)
            bar.set_postfix_str(f"{item.id} {name}")
    bar.close()
    for name in variants:
        reports[name].froc = froc(triples[name], CPM_FP_RATES)
        reports[name].aupr = curves[name].aupr()
        reports[name].dice = curves[name].dice()
    return list(reports.values())


def write_report(reports: Sequence[VariantReport], out_dir: Path) -> dict[str, Path]:
    """Write ``report.json``, ``per_image.csv`` and ``froc.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "variants": [r.summary() for r in reports],
        "froc": {r.name: {"fp_per_image": r.froc.fp_per_image.round(4).tolist(),
                          "sensitivity": r.froc.sensitivity.round(4).tolist(),
                          "threshold": [None if not np.isfinite(t) else round(float(t), 5)
                                        for t in r.froc.thresholds]} for r in reports},
        "per_image": {r.name: [row.__dict__ for row in r.rows] for r in reports},
    }
    paths = {"json": out_dir / "report.json", "csv": out_dir / "per_image.csv", "png": out_dir / "froc.png"}
    paths["json"].write_text(json.dumps(doc, indent=1))
    with open(paths["csv"], "w") as fh:
        fh.write("variant,id,n_truth,n_lesions,n_shown,hits_shown,dice,seconds\n")
        for r in reports:
            for row in r.rows:
                fh.write(f"{r.name},{row.id},{row.n_truth},{row.n_lesions},{row.n_shown},{row.hits_shown},"
                         f"{row.dice:.4f},{row.seconds:.2f}\n")
    plot_froc(reports, paths["png"])
    return paths


def plot_froc(reports: Sequence[VariantReport], path: Path, title: Optional[str] = None) -> None:
    """Draw the FROC curves (sensitivity against false positives per image, log x) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for r in reports:
        fppi = np.maximum(r.froc.fp_per_image, 1e-3)
        ax.step(fppi, r.froc.sensitivity, where="post", label=f"{r.name} (CPM {r.froc.cpm:.3f})")
    for rate in CPM_FP_RATES:
        ax.axvline(rate, color="0.85", lw=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_xlim(1 / 16, 16)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity")
    ax.set_title(title or "Lesion-level FROC")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
