"""Ablation of the domain-knowledge filter: CPM with each rule switched off in turn.

Run: ``.venv/bin/python -m appliance.eval.ablate_dkf --data ../shared/data/idrid-ma --split report``.
Candidates are detected once per photograph; only the scoring is repeated, so each row
differs from "all rules" by exactly one rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np

from appliance.config import load_config
from appliance.eval.dataset import iter_split
from appliance.eval.froc import froc, ground_truth_from_mask
from appliance.glance import dkf
from appliance.glance.candidates import detect
from appliance.imaging.fov import find_fov
from appliance.imaging.io import load_photograph
from appliance.imaging.scale import um_per_px

logger = logging.getLogger(__name__)

#: Rule name → the DkfParams change that switches it off.
ABLATIONS: dict[str, dict[str, object]] = {
    "all rules": {},
    "no size rule": {"min_diameter_um": 0.0, "max_diameter_um": math.inf},
    "no roundness rule": {"max_elongation": math.inf},
    "no contrast rule": {"min_contrast_tex": -math.inf},
    "no vessel rule": {"max_vessel_ratio": math.inf},
    "no duplicate rule": {"duplicate_penalty": 1.0},
    "no rules (base score only)": {"min_diameter_um": 0.0, "max_diameter_um": math.inf,
                                   "max_elongation": math.inf, "min_contrast_tex": -math.inf,
                                   "max_vessel_ratio": math.inf, "duplicate_penalty": 1.0,
                                   "penalty": 1.0},
}


def main() -> int:
    """Print one JSON line per ablation: its CPM and sensitivity at 1 FP per image."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="report", choices=("report", "tune", "all"))
    args = parser.parse_args()
    config = load_config()
    images = []
    for item in iter_split(args.data, args.split):
        photo = load_photograph(item.image_path, config.imaging)
        fov = find_fov(photo.rgb)
        scale = um_per_px(fov.diameter_px, config.imaging.fov_deg)
        cands = detect(photo.rgb, fov, scale, max_candidates=1_000_000)
        images.append((cands, fov, scale, ground_truth_from_mask(item.load_mask())))
    for name, change in ABLATIONS.items():
        params = dataclasses.replace(dkf.DkfParams(), **change)
        per_image = []
        for cands, fov, scale, truth in images:
            scored = dkf.score_candidates(cands, fov.mask, scale, params=params)
            xy = np.array([[s.candidate.x, s.candidate.y] for s in scored]).reshape(-1, 2)
            per_image.append((xy, np.array([s.score for s in scored]), truth))
        result = froc(per_image)
        print(json.dumps({"ablation": name, "cpm": round(result.cpm, 4),
                          "sens_at_1fppi": round(result.sensitivity_at[1.0], 4)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
