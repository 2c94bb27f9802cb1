"""Fit the candidate ranker on IDRiD_01–12 and write ``appliance/glance/ranker.json``.

Run: ``.venv/bin/python -m appliance.eval.fit_ranker --data ../shared/data/idrid-ma``

Only the tuning split is read (the fixed split of DESIGN.md). Labels come from the
matching rule's reach (a candidate within ``r + 4`` px of an annotated MA is positive).
The model is a small ReLU MLP trained with Adam in numpy on the candidates' physical
features plus their texture-normalised appearance patch, with the 8 rotations/flips of
each patch as augmentation (an MA has no orientation). ``--cv`` first reports a 3-fold
image-wise cross-validated CPM on the tuning split, per field angle. Each photograph is read
at every angle of ``--fov-deg`` (default 50°, IDRiD's camera, and 45°, 40°, 55°): a scale
augmentation that also makes the ranker forgive a wrong ``imaging.fov_deg``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from appliance.eval.dataset import TUNE_IDS, load_dataset
from appliance.eval.detector_cache import (DEFAULT_CACHE_DIR, TRAIN_FOV_DEGS, DetectedImage, candidate_labels,
                                          detect_at_angles)
from appliance.eval.froc import FrocResult, froc
from appliance.glance.dkf import score_candidates
from appliance.glance.ranker import DEFAULT_RANKER_PATH, Ranker

logger = logging.getLogger(__name__)

FEATURES = [
    "contrast", "saliency", "z", "vessel", "vessel_ratio", "area_um2", "diameter_um",
    "elongation", "fill", "ray_min", "ray_mean", "ray_consistency", "blob", "line",
    "blob_scale_um", "red_contrast", "radial", "texture", "contrast_tex",
]
LOG_FEATURES = ["contrast", "saliency", "z", "vessel", "vessel_ratio", "area_um2", "diameter_um",
                "elongation", "blob_scale_um", "texture", "contrast_tex"]


def _profile_names(det: DetectedImage) -> list[str]:
    return sorted((k for k in det.candidates[0].features if k.startswith("p_")),
                  key=lambda k: (k.split("_")[1], int(k.split("_")[2])))


def _dihedral(P: np.ndarray) -> list[np.ndarray]:
    out = []
    for t in range(8):
        q = P
        if t & 1:
            q = q[:, ::-1, :]
        if t & 2:
            q = q[:, :, ::-1]
        if t & 4:
            q = q.transpose(0, 2, 1)
        out.append(np.ascontiguousarray(q))
    return out


def fit_mlp(X: np.ndarray, y: np.ndarray, hidden: int, epochs: int, weight_decay: float,
            seed: int, lr: float = 3e-3, batch: int = 256) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train one ReLU MLP (binary cross-entropy, Adam) on standardised inputs."""
    rng = np.random.default_rng(seed)
    n, d = X.shape
    P = [rng.normal(0, 1 / np.sqrt(d), (d, hidden)), np.zeros(hidden),
         rng.normal(0, 1 / np.sqrt(hidden), (hidden, 1)), np.full(1, -3.0)]
    M = [np.zeros_like(p) for p in P]
    V = [np.zeros_like(p) for p in P]
    t = 0
    for _ in range(epochs):
        perm = rng.permutation(n)
        for b in range(0, n, batch):
            idx = perm[b:b + batch]
            zb, yb = X[idx], y[idx]
            h = np.maximum(zb @ P[0] + P[1], 0)
            p = 1 / (1 + np.exp(-np.clip(h @ P[2] + P[3], -50, 50)))
            go = (p[:, 0] - yb)[:, None] / len(idx)
            gh = (go @ P[2].T) * (h > 0)
            G = [zb.T @ gh + weight_decay * P[0], gh.sum(0), h.T @ go + weight_decay * P[2], go.sum(0)]
            t += 1
            for i in range(4):
                M[i] = 0.9 * M[i] + 0.1 * G[i]
                V[i] = 0.999 * V[i] + 0.001 * G[i] ** 2
                P[i] = P[i] - lr * (M[i] / (1 - 0.9 ** t)) / (np.sqrt(V[i] / (1 - 0.999 ** t)) + 1e-8)
    return [(P[0], P[1]), (P[2], P[3])]


def fit_ranker(dets: Sequence[DetectedImage], hidden: int = 32, epochs: int = 4,
               weight_decay: float = 1e-3, members: int = 2, use_patch: bool = True) -> Ranker:
    """Fit a ranker on detected, labelled photographs."""
    features = FEATURES + _profile_names(dets[0])
    skeleton = Ranker(features, LOG_FEATURES, use_patch, np.zeros(1), np.ones(1), [], {})
    Xs, ys = [], []
    for det in dets:
        if not det.candidates:
            continue
        rows = [c.features for c in det.candidates]
        lab = candidate_labels(det).astype(np.float64)
        if use_patch:
            P = np.stack([c.patch for c in det.candidates])
            for q in _dihedral(P):
                Xs.append(skeleton.inputs(rows, q))
                ys.append(lab)
        else:
            Xs.append(skeleton.inputs(rows))
            ys.append(lab)
    X = np.vstack(Xs)
    y = np.concatenate(ys)
    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-6
    Z = (X - mean) / std
    logger.info("fitting on %d samples (%d positive), %d inputs", len(y), int(y.sum()), X.shape[1])
    nets = [fit_mlp(Z, y, hidden, epochs, weight_decay, seed) for seed in range(members)]
    return Ranker(features, LOG_FEATURES, use_patch, mean, std, nets,
                  {"trained_on": [d.id for d in dets], "hidden": hidden, "epochs": epochs,
                   "weight_decay": weight_decay})


def evaluate(dets: Sequence[DetectedImage], ranker: Ranker | None, use_ranker: bool = True,
             max_lesions: int = 300) -> FrocResult:
    """Score the candidates with the DKF and return the FROC result."""
    per = []
    for det in dets:
        scored = score_candidates(det.candidates, det.fov_mask, det.um_per_px, ranker=ranker,
                                  use_ranker=use_ranker)[:max_lesions]
        xy = np.array([[s.candidate.x, s.candidate.y] for s in scored]).reshape(-1, 2)
        per.append((xy, np.array([s.score for s in scored]), det.truth))
    return froc(per)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/idrid-ma"))
    ap.add_argument("--fov-deg", type=float, nargs="+", default=list(TRAIN_FOV_DEGS),
                    help="field angles to read the photographs at (IDRiD's camera: 50°; see "
                         "detector_cache.TRAIN_FOV_DEGS)")
    ap.add_argument("--out", type=Path, default=DEFAULT_RANKER_PATH)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--no-patch", action="store_true")
    ap.add_argument("--cv", action="store_true", help="report 3-fold CV CPM on 01-12 first")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    items = load_dataset(args.data, TUNE_IDS)
    per_image = detect_at_angles(items, args.fov_deg, args.cache)
    kw = dict(hidden=args.hidden, epochs=args.epochs, weight_decay=args.weight_decay,
              members=args.members, use_patch=not args.no_patch)
    if args.cv:
        per_angle: list[list] = [[] for _ in args.fov_deg]
        for f in range(3):
            ranker = fit_ranker([d for i, g in enumerate(per_image) if i % 3 != f for d in g], **kw)
            for g in per_image[f::3]:
                for j, det in enumerate(g):
                    scored = score_candidates(det.candidates, det.fov_mask, det.um_per_px, ranker=ranker)[:300]
                    xy = np.array([[s.candidate.x, s.candidate.y] for s in scored]).reshape(-1, 2)
                    per_angle[j].append((xy, np.array([s.score for s in scored]), det.truth))
        for deg, per in zip(args.fov_deg, per_angle):
            res = froc(per)
            print(f"3-fold CV CPM on IDRiD_01-12 read at {deg:g}°: {res.cpm:.3f}  "
                  + " ".join(f"{k:g}:{v:.3f}" for k, v in res.sensitivity_at.items()))
    ranker = fit_ranker([d for g in per_image for d in g], **kw)
    res = evaluate([g[0] for g in per_image], ranker)
    ranker.meta["train_cpm"] = round(res.cpm, 4)
    ranker.meta["fov_degs"] = list(args.fov_deg)
    args.out.write_text(json.dumps(ranker.to_json(), separators=(",", ":")))
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB); CPM on its own training "
          f"images {res.cpm:.3f} (optimistic)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
