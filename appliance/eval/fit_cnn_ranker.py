"""Train the CNN candidate ranker on IDRiD_01–12 and export ``appliance/glance/ranker_cnn.onnx``.

Run (torch is a build-time tool; the build virtualenv has it)::

    .venv-build/bin/python -m appliance.eval.fit_cnn_ranker \\
        --data ../shared/data/idrid-ma --cv

Only the tuning split is read (DESIGN.md's fixed split). Candidates and their CNN patches
come from the detection cache (:mod:`appliance.eval.detector_cache`); labels from the
matching rule's reach (:func:`~appliance.eval.detector_cache.candidate_labels`). Training:
binary cross-entropy with positives weighted up, all positives (candidates on an MA plus
patches centred on every annotated MA, :func:`truth_patches`) and a fresh random draw of
negatives each epoch, a random flip / rotation per sample (an MA has no orientation), Adam,
and early stopping on an image-wise validation split inside 01–12.
``--cv`` first reports a 3-fold image-wise cross-validated CPM (each fold early-stops on its
own inner validation images) for every blend in :data:`~appliance.glance.cnn_ranker.BLENDS`;
the blend with the best CV CPM (mean over the angles) is shipped. Deterministic under ``--seed``.

Every photograph is read at each field angle of ``--fov-deg`` (default
:data:`~appliance.eval.detector_cache.TRAIN_FOV_DEGS`): IDRiD's true 50° and the 40–55°
a misconfigured camera would be read at, so the ranker learns MAs over a ±20 % range of
assumed scale, and the appliance's default 45° on a 50° camera costs little. The CV figures
are reported per angle.

Tried and not shipped: averaging the CNN's probability over a patch's eight flips and
quarter turns at run time. In the 3-fold CV above (same networks, one view against eight;
2026-11-27), the CNN alone gained 0.003-0.010 CPM at 50°, 45° and 40°, ``cnn_hand``
0.000-0.003, and the shipped ``cnn_mlp_hand`` lost 0.000-0.001, at eight times the
CNN's cost. Nor a bag of four networks (each early-stopped on different photographs of
its fold's training set, probabilities averaged): in the same 3-fold CV (2026-11-27, the
shipped network being the bag's first member), ``cnn_mlp_hand`` went 0.122 -> 0.118 at
50°, 0.118 -> 0.116 at 45°, 0.104 -> 0.105 at 40° and 0.102 -> 0.101 at 55°, at four
times the CNN's cost. Nor hard negatives (half of each epoch's negatives drawn from the
3,000 the network then scored highest): 0.122, 0.120, 0.109, 0.104 at 50°, 45°, 40°, 55°
(2026-11-27), within the swings between networks of the same recipe.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from appliance.eval.dataset import TUNE_IDS, DatasetItem, load_dataset
from appliance.eval.detector_cache import (DEFAULT_CACHE_DIR, TRAIN_FOV_DEGS, DetectedImage, candidate_labels,
                                          detect_at_angles, scale_key)
from appliance.eval.froc import froc
from appliance.glance.candidates import CNN_PATCH, CNN_STEPS_UM, cnn_patches
from appliance.glance.cnn_ranker import BLENDS, DEFAULT_CNN_PATH, combine, sha256_file
from appliance.glance.dkf import hand_score, score_candidates
from appliance.glance.saliency import compute_saliency

logger = logging.getLogger(__name__)


class Net(nn.Module):
    """Three conv blocks (16-32-64 channels, 3×3, max-pool) and a 64-unit head."""

    def __init__(self, channels: int = len(CNN_STEPS_UM), size: int = CNN_PATCH) -> None:
        super().__init__()

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]

        self.features = nn.Sequential(*block(channels, 16), *block(16, 32), *block(32, 64))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * (size // 8) ** 2, 64), nn.ReLU(),
                                  nn.Dropout(0.3), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit per patch; inputs are texture units, scaled down to ~unit range here."""
        return self.head(self.features(torch.clamp(x, -30.0, 30.0) / 5.0))


def truth_patches(det: DetectedImage, item: DatasetItem, cache_dir: Path | None,
                  jitter_px: float = 1.5, copies: int = 3, seed: int = 0) -> np.ndarray:
    """CNN patches centred (with a little jitter) on every annotated MA of one photograph.

    Extra positives: with ~30 MAs a photograph, the candidates that hit an MA are too few
    to train a CNN on; an annotated centre is what a well-placed candidate would see.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"cnn-truth-{scale_key(det)}-v2-{copies}-{jitter_px}-{seed}.npy"
        if path.is_file():
            return np.load(path)
    if len(det.truth) == 0:
        return np.zeros((0, len(CNN_STEPS_UM), CNN_PATCH, CNN_PATCH), np.float16)
    rgb = item.load_rgb()
    smap = compute_saliency(rgb, det.fov_mask, det.um_per_px)
    rng = np.random.default_rng(seed)
    c = np.repeat(det.truth.centers_xy, copies, axis=0)
    c = c + rng.uniform(-jitter_px, jitter_px, c.shape) * (np.arange(len(c)) % copies > 0)[:, None]
    out = cnn_patches(rgb, smap, c)
    if path is not None:
        np.save(path, out)
    return out


def _data(dets: Sequence[DetectedImage], extra: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    X = [np.stack([c.patch_cnn for c in d.candidates]) for d in dets]
    y = [candidate_labels(d).astype(np.float32) for d in dets]
    for d in dets:
        more = extra.get(scale_key(d))
        if more is not None and len(more):
            X.append(more)
            y.append(np.ones(len(more), np.float32))
    return np.concatenate(X), np.concatenate(y)


def _flat(groups) -> list[DetectedImage]:
    """One list of the per-photograph, per-angle detections."""
    return [d for g in groups for d in g]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of candidates ranked by score (smoother than a 2-image CPM)."""
    order = np.argsort(-scores, kind="stable")
    hit = labels[order] > 0
    if not hit.any():
        return 0.0
    prec = np.cumsum(hit) / np.arange(1, len(hit) + 1)
    return float(prec[hit].mean())


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random one of the 8 flips / rotations per sample."""
    k = torch.randint(0, 8, (x.shape[0],), generator=gen)
    out = x.clone()
    for t in range(1, 8):
        idx = (k == t).nonzero().flatten()
        if idx.numel() == 0:
            continue
        q = x[idx]
        if t & 1:
            q = q.flip(-1)
        if t & 2:
            q = q.flip(-2)
        if t & 4:
            q = q.transpose(-1, -2)
        out[idx] = q
    return out


def predict(net: nn.Module, X: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Probabilities for patches ``X`` (N, C, S, S)."""
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(X), batch):
            out.append(torch.sigmoid(net(torch.from_numpy(X[i:i + batch].astype(np.float32)))).numpy().ravel())
    return np.concatenate(out) if out else np.zeros(0)


def cpm_of(dets: Sequence[DetectedImage], probs: Sequence[np.ndarray], blend: str,
           max_lesions: int = 300, mlp: Sequence[np.ndarray] | None = None) -> float:
    """Lesion-level CPM of images scored with the DKF on base = :func:`combine`."""
    per = []
    for i, (det, p) in enumerate(zip(dets, probs)):
        hand = np.array([hand_score(c.features) for c in det.candidates])
        scored = score_candidates(det.candidates, det.fov_mask, det.um_per_px,
                                  base=combine(p, hand, blend, None if mlp is None else mlp[i]))[:max_lesions]
        xy = np.array([[s.candidate.x, s.candidate.y] for s in scored]).reshape(-1, 2)
        per.append((xy, np.array([s.score for s in scored]), det.truth))
    return froc(per).cpm


def train(train_dets: Sequence[DetectedImage], val_dets: Sequence[DetectedImage], seed: int,
          extra: dict[str, np.ndarray], epochs: int = 14, negatives: int = 10000,
          patience: int = 5, blend: str = "cnn") -> tuple[nn.Module, dict]:
    """Train one network; keep the epoch with the best validation average precision.

    Early stopping reads the pooled average precision of the validation images' candidates
    (their CPM is reported too): with two or three validation photographs the CPM swings
    with a handful of MAs, the average precision much less.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    X, y = _data(train_dets, extra)
    Xv = [np.stack([c.patch_cnn for c in d.candidates]) for d in val_dets]
    yv = np.concatenate([candidate_labels(d) for d in val_dets])
    pos, neg = np.nonzero(y > 0)[0], np.nonzero(y == 0)[0]
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    n_neg = min(negatives, len(neg))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(float(np.sqrt(n_neg / max(1, len(pos))))))
    best, best_state, best_epoch, history = -1.0, None, -1, []
    for epoch in range(epochs):
        t0 = time.time()
        net.train()
        idx = np.concatenate([pos, rng.choice(neg, n_neg, replace=False)])
        idx = idx[rng.permutation(len(idx))]
        for b in range(0, len(idx), 128):
            sel = idx[b:b + 128]
            xb = _augment(torch.from_numpy(X[sel].astype(np.float32)), gen)
            yb = torch.from_numpy(y[sel])[:, None]
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
        pv = [predict(net, x) for x in Xv]
        val = average_precision(np.concatenate(pv), yv)
        history.append((round(val, 4), round(cpm_of(val_dets, pv, "cnn"), 4)))
        logger.info("epoch %d: val AP %.3f CPM %.3f (%.0f s)", epoch, val, history[-1][1],
                    time.time() - t0)
        if val > best:
            best, best_epoch = val, epoch
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    net.load_state_dict(best_state)
    net.eval()
    return net, {"val_ap": round(best, 4), "val_cpm": history[best_epoch][1],
                 "best_epoch": best_epoch, "val_history": history,
                 "positives": int(len(pos)), "negatives_per_epoch": int(n_neg)}


def export(net: nn.Module, out: Path, meta: dict) -> None:
    """Write the ONNX file (opset 17, dynamic batch) and its JSON sidecar with the sha256."""
    net.eval()
    dummy = torch.zeros(1, len(CNN_STEPS_UM), CNN_PATCH, CNN_PATCH)
    torch.onnx.export(net, (dummy,), str(out), input_names=["patch"], output_names=["logit"],
                      dynamic_axes={"patch": {0: "n"}, "logit": {0: "n"}}, opset_version=17,
                      dynamo=False)
    meta = {**meta, "sha256": sha256_file(out), "bytes": out.stat().st_size,
            "input": {"name": "patch", "shape": ["n", len(CNN_STEPS_UM), CNN_PATCH, CNN_PATCH],
                      "steps_um": list(CNN_STEPS_UM),
                      "values": "(background - green) / background / texture, clipped to ±30"},
            "output": "logit (sigmoid -> MA probability)", "opset": 17}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/idrid-ma"))
    ap.add_argument("--fov-deg", type=float, nargs="+", default=list(TRAIN_FOV_DEGS),
                    help="field angles to read the photographs at (IDRiD's camera: 50°)")
    ap.add_argument("--out", type=Path, default=DEFAULT_CNN_PATH)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--negatives", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cv", action="store_true", help="report 3-fold CV CPM on 01-12 first")
    ap.add_argument("--blend", choices=BLENDS, default=None,
                    help="ship this blend (default: best CV blend with --cv, else cnn_hand)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    items = load_dataset(args.data, TUNE_IDS)
    degs = tuple(args.fov_deg)
    per_image = detect_at_angles(items, degs, args.cache)
    extra = {scale_key(d): truth_patches(d, it, args.cache) for g, it in zip(per_image, items) for d in g}
    kw = dict(extra=extra, epochs=args.epochs, negatives=args.negatives)
    cv: dict = {}
    blend = args.blend or "cnn_hand"
    if args.cv:
        from appliance.eval.fit_ranker import fit_ranker

        # Per angle: the held-out photographs' candidates, CNN and feature-ranker probabilities.
        test_all: list[list] = [[] for _ in degs]
        probs_all: list[list] = [[] for _ in degs]
        mlp_all: list[list] = [[] for _ in degs]
        for f in range(3):
            rest = [g for i, g in enumerate(per_image) if i % 3 != f]
            inner = rest[::4]  # two validation photographs for early stopping
            net, info = train(_flat(g for i, g in enumerate(rest) if i % 4), _flat(inner),
                              seed=args.seed + f, **kw)
            mlp = fit_ranker(_flat(rest))  # the feature ranker refitted on the same images
            for g in per_image[f::3]:
                for j, d in enumerate(g):
                    test_all[j].append(d)
                    probs_all[j].append(predict(net, np.stack([c.patch_cnn for c in d.candidates])))
                    mlp_all[j].append(mlp.probability([c.features for c in d.candidates],
                                                      np.stack([c.patch for c in d.candidates])))
            logger.info("fold %d: %s", f, info)
        for j, deg in enumerate(degs):
            row = {b: round(cpm_of(test_all[j], probs_all[j], b, mlp=mlp_all[j]), 4) for b in BLENDS}
            hand = [np.array([hand_score(c.features) for c in d.candidates]) for d in test_all[j]]
            row["mlp_hand (feature ranker alone)"] = round(cpm_of(
                test_all[j], [np.sqrt(m * h) for m, h in zip(mlp_all[j], hand)], "cnn"), 4)
            row["hand rules alone"] = round(froc([
                (np.array([[s.candidate.x, s.candidate.y] for s in sc]).reshape(-1, 2),
                 np.array([s.score for s in sc]), d.truth)
                for d in test_all[j] for sc in [score_candidates(
                    d.candidates, d.fov_mask, d.um_per_px, use_ranker=False)[:300]]]).cpm, 4)
            cv[f"{deg:g} deg"] = row
            print(f"3-fold CV CPM on IDRiD_01-12 read at {deg:g}°: "
                  + "  ".join(f"{b} {v:.3f}" for b, v in row.items()))
        if args.blend is None:
            blend = max(BLENDS, key=lambda b: float(np.mean([r[b] for r in cv.values()])))
    val = per_image[::4]  # IDRiD_01, 05, 09: early stopping only
    fit_on = [g for i, g in enumerate(per_image) if i % 4]
    net, info = train(_flat(fit_on), _flat(val), seed=args.seed, blend=blend, **kw)
    meta = {"trained_on": [g[0].id for g in fit_on], "fov_degs": list(degs),
            "early_stopping_on": [g[0].id for g in val], "blend": blend, "seed": args.seed,
            "cv_cpm_01_12": cv, **info}
    export(net, args.out, meta)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB), blend {blend}, "
          f"validation AP {info['val_ap']:.3f} CPM {info['val_cpm']:.3f} at epoch {info['best_epoch']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
