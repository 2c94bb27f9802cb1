"""Saliency ms per ROI (as glanceseg bench measures it) under different CPU thread settings."""
import json, os, subprocess, sys, time
CHILD = r'''
import os, sys, time, json
import numpy as np, cv2
n = int(os.environ.get("CVT", "-1"))
if n >= 0: cv2.setNumThreads(n)
from pathlib import Path
from appliance.config import load_config
from appliance.glance.engine import GlanceEngine
from appliance.glance.candidates import detect
from appliance.imaging.io import load_photograph
cfg = load_config(None)
photo = load_photograph(Path(sys.argv[1]), cfg.imaging)
session = GlanceEngine.from_config(cfg, use_model=False).open(photo)
rng = np.random.default_rng(0)
ys, xs = np.nonzero(session.fov.mask[::16, ::16])
side = 320
times = []
for i in rng.choice(len(xs), size=40, replace=False):
    cx, cy = int(xs[i]) * 16, int(ys[i]) * 16
    w = (max(0, cx - side // 2), max(0, cy - side // 2), min(photo.width, cx + side // 2), min(photo.height, cy + side // 2))
    t = time.perf_counter(); detect(photo.rgb, session.fov, session.um_per_px, window=w); times.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"cv2_threads": cv2.getNumThreads(), "median_ms": round(float(np.median(times)), 1), "p95_ms": round(float(np.percentile(times, 95)), 1)}))
'''
image = sys.argv[1]
out = []
for env in ({}, {"CVT": "8"}, {"CVT": "4"}, {"CVT": "2"}, {"CVT": "1"}, {"CVT": "2", "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}):
    r = subprocess.run([sys.executable, "-c", CHILD, image], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    line = r.stdout.strip().splitlines()[-1] if r.returncode == 0 else r.stderr[-500:]
    print(env, line, flush=True)
    out.append([env, line])
json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), "saliency_threads.json"), "w"))
