"""An experiment that did not ship: a small U-Net as the MA detector, against the shipped ranker.

Why it was tried: the shipped candidate ranker learns from about 450 annotated MAs seen as
isolated patches; a segmentation network learns from every annotated pixel and every
unannotated one around it, and might tell a sharp round MA from a diffuse choroidal blob.
Why it is not in the appliance: on the report split it did not beat the shipped ranker
(figures below; measured 2026-11-27 on IDRiD_13–24 with the network trained on 01–08 by
``models/manet_train.py --val``, 2,000 steps on this 2-core CPU, ~18 min; its pixel average
precision on the held-out 09–12 was 0.33, 0.41, 0.15, 0.04), so it would have added ~10 s
a scan for nothing:

===========================================  =====
scoring of the scan candidates                 CPM
===========================================  =====
shipped ranker + DKF (cached path, 50°)      0.192
U-Net peaks alone                            0.132
U-Net at the shipped candidates              0.143
shipped × U-Net (geometric blend)            0.192
===========================================  =====

Reproduce::

    .venv-build/bin/python models/manet_train.py --data DIR --out /tmp/manet --val
    .venv/bin/python -m appliance.eval.manet /tmp/manet/manet_b8_val.onnx \
        --data ../shared/data/idrid-ma --split report

``DIR`` holds ``images/``, ``masks/`` of IDRiD_01–12 and ``fov/IDRiD_NN.png`` (the
appliance's field-of-view masks; ``--write-fov`` below writes them).

The input (:func:`contrast_input`) is numpy and OpenCV alone because the training script
loads this file by path: the network sees the same numbers in training and evaluation.
An MA is a small spot darker than the retina around it, in green most and in red a
little; dividing each channel by a median background (robust to the spots themselves)
turns every camera into "fraction darker than the surroundings". The network runs tile by
tile on a grid fixed to the image origin, with a margin wider than its receptive field
plus half the background window, so a pixel gets the same value in any window.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

logger = logging.getLogger(__name__)

#: Retinal µm per input pixel: IDRiD's Kowa VX-10α at 50° (about 4.25 µm per px), where
#: the network was trained. Photographs at another scale are resampled to it.
CANONICAL_UM_PER_PX = 4.25
#: Background median window in µm: wider than the largest MA (125 µm) by a margin, so the
#: median ignores the spot, narrower than the illumination's slow changes.
BACKGROUND_UM = 200.0
#: Contrast gain and clip: ±3 after scaling covers a 30 % darkening, far past any MA.
GAIN = 10.0
CLIP = 3.0
CHANNELS = 3


def _odd(n: float) -> int:
    return max(3, int(round(n)) | 1)


def contrast_input(rgb: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Return the ``(3, H, W)`` float32 network input of an RGB photograph at canonical scale.

    Parameters
    ----------
    rgb
        ``H × W × 3`` uint8 photograph, already at :data:`CANONICAL_UM_PER_PX`.
    fov
        ``H × W`` bool field of view; the input is 0 outside it (the black margin is not
        retina, and its edge must not look like a dark spot).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("The MA network needs an H x W x 3 uint8 photograph.")
    h, w = rgb.shape[:2]
    fov = np.asarray(fov, bool)
    # Median at half resolution: 4x cheaper, and the background is smooth anyway.
    k = _odd(BACKGROUND_UM / CANONICAL_UM_PER_PX / 2.0)
    small = cv2.resize(rgb, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    fov_small = cv2.resize(fov.astype(np.uint8), (small.shape[1], small.shape[0]),
                           interpolation=cv2.INTER_NEAREST).astype(bool)
    # Fill the margin with the mean retina so the median near the rim is not pulled dark.
    if fov_small.any():
        small = small.copy()
        small[~fov_small] = small[fov_small].mean(axis=0).astype(np.uint8)
    out = np.zeros((CHANNELS, h, w), np.float32)
    for c in range(CHANNELS):
        bg = cv2.resize(cv2.medianBlur(small[:, :, c], k), (w, h), interpolation=cv2.INTER_LINEAR)
        bg = bg.astype(np.float32) + 4.0
        x = (rgb[:, :, c].astype(np.float32) + 4.0 - bg) / bg * GAIN
        np.clip(x, -CLIP, CLIP, out=x)
        x[~fov] = 0.0
        out[c] = x
    return out


#: Output tile interior and margin (canonical px), on a grid fixed to the image origin. The
#: margin covers the U-Net's receptive field (about ±45 px) plus half the background median
#: (about ±24 px), so an interior pixel gets the value a whole-image pass would give it.
TILE = 384
MARGIN = 80
#: Resample only when the photograph's scale is off the canonical by more than this.
SCALE_TOLERANCE = 0.08
#: Logit given to pixels outside the field of view (probability ~5e-5).
OUTSIDE = -10.0


@dataclass(frozen=True)
class MaPeak:
    """A local maximum of the MA probability: image px ``x``, ``y`` and its probability."""

    x: float
    y: float
    probability: float


class MaNet:
    """An onnxruntime session over the MA network, safe to call from several threads."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"The MA network {path} or its sidecar {meta_path.name} is missing; "
                                    "reinstall the appliance.")
        self.meta = json.loads(meta_path.read_text())
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._lock = threading.Lock()
        self.path = path

    def _run(self, x: np.ndarray) -> np.ndarray:
        """Logits of one ``(3, h, w)`` block, padded to a multiple of 8.

        Logits, not probabilities: the sigmoid saturates at 1.0 over a confident MA's whole
        disc, and a plateau has no peak to rank by.
        """
        _, h, w = x.shape
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, ph), (0, pw)))
        with self._lock:
            logit = self._session.run(None, {self._input: x[None]})[0][0, 0, :h, :w]
        return logit.astype(np.float32)

    def _block(self, rgb: np.ndarray, fov_mask: np.ndarray, f: Optional[float],
               box: tuple[int, int, int, int]) -> np.ndarray:
        """Logits of one canonical-px block ``box``, resampling the photograph by ``f`` if set."""
        bx0, by0, bx1, by1 = box
        h, w = rgb.shape[:2]
        if f is not None:
            ix0, iy0 = int(np.floor(bx0 / f)), int(np.floor(by0 / f))
            ix1, iy1 = min(w, int(np.ceil(bx1 / f)) + 1), min(h, int(np.ceil(by1 / f)) + 1)
            size = (bx1 - bx0, by1 - by0)
            interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
            crop = cv2.resize(rgb[iy0:iy1, ix0:ix1], size, interpolation=interp)
            fov = cv2.resize(fov_mask[iy0:iy1, ix0:ix1].astype(np.uint8), size,
                             interpolation=cv2.INTER_NEAREST).astype(bool)
        else:
            crop, fov = rgb[by0:by1, bx0:bx1], fov_mask[by0:by1, bx0:bx1]
        if not fov.any():
            return np.full((by1 - by0, bx1 - bx0), OUTSIDE, np.float32)
        p = self._run(contrast_input(np.ascontiguousarray(crop), fov))
        p[~fov] = OUTSIDE
        return p

    def logits(self, rgb: np.ndarray, fov_mask: np.ndarray, um_per_px: float,
               window: Optional[tuple[int, int, int, int]] = None) -> np.ndarray:
        """Return the MA logit map of ``window`` ``(x0, y0, x1, y1)`` (default: the whole image).

        The result has the window's size in image px; :data:`OUTSIDE` outside the field of
        view.
        """
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = window if window is not None else (0, 0, w, h)
        x0, y0, x1, y1 = max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1))
        if x1 <= x0 or y1 <= y0:
            return np.full((max(0, y1 - y0), max(0, x1 - x0)), OUTSIDE, np.float32)
        f = um_per_px / CANONICAL_UM_PER_PX  # canonical px per image px
        rescale = abs(f - 1.0) > SCALE_TOLERANCE
        if not rescale:
            f = 1.0
        # Tiles on a fixed canonical grid: interiors [k*TILE, (k+1)*TILE) that meet the window.
        cx0, cy0 = int(np.floor(x0 * f)), int(np.floor(y0 * f))
        cx1, cy1 = int(np.ceil(x1 * f)), int(np.ceil(y1 * f))
        cw, ch = int(round(w * f)), int(round(h * f))
        out = np.full((cy1 - cy0, cx1 - cx0), OUTSIDE, np.float32)
        for ty in range(cy0 // TILE * TILE, cy1, TILE):
            for tx in range(cx0 // TILE * TILE, cx1, TILE):
                # The block with its margin, in canonical px, clipped to the photograph.
                bx0, by0 = max(0, tx - MARGIN), max(0, ty - MARGIN)
                bx1, by1 = min(cw, tx + TILE + MARGIN), min(ch, ty + TILE + MARGIN)
                if bx1 <= bx0 or by1 <= by0:
                    continue
                p = self._block(rgb, fov_mask, f if rescale else None, (bx0, by0, bx1, by1))
                # Copy the tile's interior that lies inside the window.
                ix0, iy0 = max(tx, cx0), max(ty, cy0)
                ix1, iy1 = min(tx + TILE, cx1, bx1), min(ty + TILE, cy1, by1)
                if ix1 > ix0 and iy1 > iy0:
                    out[iy0 - cy0:iy1 - cy0, ix0 - cx0:ix1 - cx0] = p[iy0 - by0:iy1 - by0, ix0 - bx0:ix1 - bx0]
        if rescale:
            out = cv2.resize(out, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Probability of a logit (float32, no overflow warning)."""
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))).astype(np.float32)


def find_peaks(logit: np.ndarray, um_per_px: float, min_logit: float = -4.0,
               origin: tuple[int, int] = (0, 0)) -> list[MaPeak]:
    """Local maxima of a logit map at least one MA diameter (about 60 µm) apart.

    The map is smoothed over about a third of an MA (σ 6 µm) first, so a peak sits at the
    lesion's centre rather than on one noisy pixel; equal neighbours (a flat top) keep only
    the first in raster order. ``probability`` is that of the smoothed logit.
    """
    if logit.size == 0:
        return []
    sigma = max(0.5, 6.0 / um_per_px)
    sm = cv2.GaussianBlur(logit.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    d = max(3, int(round(60.0 / um_per_px)) | 1)
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
    is_max = (sm >= cv2.dilate(sm, se)) & (sm >= min_logit)
    ys, xs = np.nonzero(is_max)
    order = np.argsort(-sm[ys, xs], kind="stable")
    taken = np.zeros(sm.shape, bool)
    r = d // 2
    peaks = []
    h, w = sm.shape
    for i in order:
        y, x = int(ys[i]), int(xs[i])
        if taken[y, x]:
            continue
        taken[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1] = True
        ya, yb, xa, xb = max(0, y - 2), min(h, y + 3), max(0, x - 2), min(w, x + 3)
        wgt = np.exp(sm[ya:yb, xa:xb] - sm[y, x])  # softmax-like weights around the top
        gy, gx = np.mgrid[ya:yb, xa:xb]
        cx, cy = float((wgt * gx).sum() / wgt.sum()), float((wgt * gy).sum() / wgt.sum())
        peaks.append(MaPeak(cx + origin[0], cy + origin[1], float(sigmoid(np.float32(sm[y, x])))))
    return peaks


def _scores_at(logit: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Probability of the smoothed logit map, max over 5 × 5 px, at candidate centres."""
    sm = cv2.GaussianBlur(logit, (0, 0), 1.4)
    ij = np.clip(np.rint(xy).astype(int), 0, [logit.shape[1] - 1, logit.shape[0] - 1])
    return sigmoid(cv2.dilate(sm, np.ones((5, 5), np.uint8))[ij[:, 1], ij[:, 0]])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Report CPM of the U-Net beside the shipped ranker on one split; exit status 0."""
    from appliance.eval.dataset import REPORT_IDS, TUNE_IDS, load_dataset
    from appliance.eval.detector_cache import detect_item
    from appliance.eval.froc import froc
    from appliance.glance.dkf import score_candidates

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, nargs="?")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/idrid-ma"))
    ap.add_argument("--split", choices=("report", "val"), default="report",
                    help="report = IDRiD_13-24; val = IDRiD_09-12 (a --val network's held-out images)")
    ap.add_argument("--fov-deg", type=float, default=50.0, help="IDRiD's camera: 50°")
    ap.add_argument("--write-fov", type=Path, help="write IDRiD_01-12's FOV masks here and exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.write_fov:
        from appliance.imaging.fov import find_fov

        args.write_fov.mkdir(parents=True, exist_ok=True)
        for item in load_dataset(args.data, TUNE_IDS):
            cv2.imwrite(str(args.write_fov / f"{item.id}.png"), find_fov(item.load_rgb()).mask.astype(np.uint8) * 255)
        return 0
    net = MaNet(args.model)
    rows: dict[str, list] = {"shipped": [], "unet_peaks": [], "unet_at_candidates": [], "shipped_x_unet": []}
    for item in load_dataset(args.data, REPORT_IDS if args.split == "report" else TUNE_IDS[8:]):
        det = detect_item(item, args.fov_deg)
        logit = net.logits(item.load_rgb(), det.fov_mask, det.um_per_px)
        peaks = find_peaks(logit, det.um_per_px)
        scored = score_candidates(det.candidates, det.fov_mask, det.um_per_px)
        xy = np.array([[s.candidate.x, s.candidate.y] for s in scored]).reshape(-1, 2)
        shipped = np.array([s.score for s in scored])
        unet = _scores_at(logit, xy)
        rows["shipped"].append((xy, shipped, det.truth))
        rows["unet_peaks"].append((np.array([[p.x, p.y] for p in peaks]).reshape(-1, 2),
                                   np.array([p.probability for p in peaks]), det.truth))
        rows["unet_at_candidates"].append((xy, unet, det.truth))
        rows["shipped_x_unet"].append((xy, np.sqrt(np.clip(shipped, 0, None) * unet), det.truth))
        logger.info("%s: %d peaks", item.id, len(peaks))
    figures = {k: round(froc(v).cpm, 4) for k, v in rows.items()}
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
