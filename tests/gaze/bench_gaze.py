"""Figures for the gaze front end on idrid-ma IDRiD_13-24 (not a test; run by hand).

    .venv/bin/python tests/gaze/bench_gaze.py

Per image: simulate a reading (seed 0, default ReaderParams, FOV from find_fov), detect
fixations, build the heat map and glanced cells, and report how many MAs the reader dwelt
on, whether those lie inside the glanced region, and the time each step takes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np

from appliance.config import load_config
from appliance.gaze.fixations import FixationDetector
from appliance.gaze.roi import RoiTracker
from appliance.gaze.simulated import ReaderParams, ma_targets_from_mask, simulate_reading
from appliance.imaging.fov import find_fov
from appliance.imaging.io import load_photograph

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "idrid-ma"


def main() -> None:
    cfg = load_config(environ={})
    tot = tot_d = in_d = in_all = n_samp = n_fix = n_img = 0
    nearest: list[float] = []
    t_sim = t_fix = t_roi = 0.0
    for i in range(13, 25):
        if i == 18:
            continue
        n_img += 1
        photo = load_photograph(DATA / "images" / f"IDRiD_{i:02d}.jpg", cfg.imaging)
        h, w = photo.rgb.shape[:2]
        fov = find_fov(photo.rgb)
        mas = ma_targets_from_mask(cv2.imread(str(DATA / "masks" / f"IDRiD_{i:02d}_MA.png"), 0))
        t = time.perf_counter()
        r = simulate_reading(w, h, mas, ReaderParams(), seed=0, fov_center_xy=fov.center_xy,
                             fov_radius_px=fov.radius_px, fov_mask=fov.mask)
        t_sim += time.perf_counter() - t
        det = FixationDetector(default_px_per_deg=r.px_per_deg, image_size=(w, h))
        t = time.perf_counter()
        fixes = det.feed_many(r.samples) + det.flush()
        t_fix += time.perf_counter() - t
        roi = RoiTracker(w, h)
        t = time.perf_counter()
        for f in fixes:
            roi.add_fixation(f)
        t_roi += time.perf_counter() - t
        n_samp += len(r.samples)
        n_fix += len(fixes)
        dwelt = set(r.dwelt)
        for m in mas:
            inside = roi.contains(m.x, m.y)
            tot += 1
            in_all += inside
            if m.index in dwelt:
                tot_d += 1
                in_d += inside
                nearest.append(min(math.hypot(f.x - m.x, f.y - m.y) for f in fixes) / r.px_per_deg)
    print(f"{n_img} images: MAs {tot}, dwelt {tot_d} ({tot_d / tot:.0%}); dwelt MAs inside the glanced "
          f"region {in_d}/{tot_d}; all MAs inside {in_all}/{tot}")
    print(f"nearest detected fixation to a dwelt MA (deg): median {np.median(nearest):.2f}, "
          f"p90 {np.percentile(nearest, 90):.2f}, max {max(nearest):.2f}")
    print(f"simulate {t_sim / n_img * 1000:.0f} ms/image; detector {t_fix / n_samp * 1e6:.1f} us/sample; "
          f"ROI update {t_roi / n_fix * 1000:.2f} ms/fixation ({n_fix} fixations, {n_samp} samples)")


if __name__ == "__main__":
    main()
