"""Report the saliency-only scan pipeline's CPM (and pixel AUPR / Dice) per split.

Run: ``.venv/bin/python -m appliance.eval.tune_detector --data ../shared/data/idrid-ma``

For each split (``tune`` = IDRiD_01–12, ``report`` = IDRiD_13–24) it runs
:func:`appliance.glance.candidates.detect` (cached under /tmp) and
:func:`appliance.glance.dkf.score_candidates`, keeps the best ``--max-lesions`` per image
(what ``lesions.json`` would hold) and scores them with DESIGN.md's matching rule. Two
rankings are shown: the hand-built rules alone and the learned ranker (``ranker.json``).
Tune on ``tune``; read ``report`` only to report.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from appliance.eval.dataset import load_dataset
from appliance.eval.detector_cache import DEFAULT_CACHE_DIR, DetectedImage, detect_item
from appliance.eval.froc import FrocResult, PixelCurve, froc
from appliance.glance.dkf import DkfParams, ScoredCandidate, score_candidates
from appliance.glance.ranker import load_ranker

logger = logging.getLogger(__name__)

SPLITS = {
    "tune": [f"IDRiD_{i:02d}" for i in range(1, 13)],
    "report": [f"IDRiD_{i:02d}" for i in range(13, 25) if i != 18],
}


def score_map(scored: Sequence[ScoredCandidate], shape_hw: tuple[int, int]) -> np.ndarray:
    """Per-pixel score: each lesion's mask pixels carry its score (max where they overlap)."""
    out = np.zeros(shape_hw, np.float32)
    h, w = shape_hw
    for sc in scored:
        c = sc.candidate
        if c.mask is None:
            continue
        x0, y0 = c.mask_origin
        mh, mw = c.mask.shape
        xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + mw), min(h, y0 + mh)
        if xb <= xa or yb <= ya:
            continue
        sub = c.mask[ya - y0:yb - y0, xa - x0:xb - x0]
        view = out[ya:yb, xa:xb]
        view[sub] = np.maximum(view[sub], sc.score)
    return out


def run_split(dets: Sequence[DetectedImage], use_ranker: bool, max_lesions: int,
              params: DkfParams, pixels: bool, masks: dict | None = None) -> tuple[FrocResult, float, float]:
    """Return the FROC result and pixel AUPR / Dice (NaN unless ``pixels``) of one split."""
    per = []
    curve = PixelCurve()
    for det in dets:
        scored = score_candidates(det.candidates, det.fov_mask, det.um_per_px, params=params,
                                  use_ranker=use_ranker)[:max_lesions]
        xy = np.array([[s.candidate.x, s.candidate.y] for s in scored]).reshape(-1, 2)
        per.append((xy, np.array([s.score for s in scored]), det.truth))
        if pixels and masks is not None:
            truth = masks[det.id]()
            smap = score_map(scored, truth.shape)
            curve.add(smap, truth, predicted=smap >= params.keep_threshold, valid=det.fov_mask)
    res = froc(per)
    if pixels:
        return res, curve.aupr(), curve.dice()
    return res, float("nan"), float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/idrid-ma"))
    ap.add_argument("--fov-deg", type=float, default=50.0, help="IDRiD's Kowa VX-10α: 50°")
    ap.add_argument("--splits", default="tune,report")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--max-lesions", type=int, default=300)
    ap.add_argument("--pixels", action="store_true", help="also pixel-level AUPR and Dice")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    params = DkfParams()
    have_ranker = load_ranker() is not None
    for split in args.splits.split(","):
        items = load_dataset(args.data, SPLITS[split])
        dets = [detect_item(it, args.fov_deg, cache_dir=args.cache) for it in items]
        masks = {it.id: it.load_mask for it in items}
        for use_ranker in ([False, True] if have_ranker else [False]):
            res, aupr, dsc = run_split(dets, use_ranker, args.max_lesions, params, args.pixels, masks)
            name = "learned ranker + rules" if use_ranker else "hand rules only"
            sens = " ".join(f"{k:g}:{v:.3f}" for k, v in res.sensitivity_at.items())
            extra = f"  pixel AUPR {aupr:.3f} Dice {dsc:.3f}" if args.pixels else ""
            print(f"{split:6s} ({len(dets)} images, {res.n_truth} MAs) {name:24s} "
                  f"CPM {res.cpm:.3f}  [{sens}]{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
