"""Candidate microaneurysms: peaks of the saliency map, each with measured features.

``detect`` is what the scan pipeline (whole FOV) and the gaze pipeline (a window) call:
photograph in, candidates with features out. The features are physical (µm, Weber
contrast, contrast over local noise, shape ratios) so the domain-knowledge filter
(:mod:`appliance.glance.dkf`) can judge them without knowing the camera.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import cv2
import numpy as np
from scipy import ndimage

from appliance.glance.saliency import SaliencyMap, SaliencyParams, compute_saliency

if TYPE_CHECKING:
    from appliance.imaging.fov import FieldOfView

logger = logging.getLogger(__name__)

#: Directions of the radial profiles (rotational consistency: a dot rises in every direction).
N_RAYS = 16
#: Diameter (µm) of the disc a peak must dominate: one candidate per lesion (a second
#: candidate on one MA would be a false positive), and vessel-side clutter thinned out.
PEAK_SEPARATION_UM = 200.0
#: Candidates kept per call before ranking, most salient first. High enough not to bind on
#: a whole IDRiD photograph: a cap that binds makes a window's candidates differ from the
#: whole image's there.
MAX_CANDIDATES = 8000
#: Radius (µm) of the window in which a peak's centre is refined to the top-hat centroid.
REFINE_UM = 20.0
#: Radii (µm) of the rotation-invariant profile descriptor; the last is the baseline ring.
PROFILE_RADII_UM: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 65.0, 80.0, 100.0, 130.0)
#: Appearance patch: side in samples and sample spacing in µm.
PATCH_SIZE = 15
PATCH_STEP_UM = 10.0
#: Minimum saliency / local noise for a peak to be a candidate at all.
MIN_PEAK_Z = 1.5
#: CNN ranker input: ``CNN_PATCH × CNN_PATCH`` samples per channel, one channel per spacing
#: (µm): a fine 4 µm view of the dot (about the IDRiD pixel) and an 8 µm view of its
#: surroundings (vessels, haemorrhages), both darkness over local background and texture.
CNN_PATCH = 32
CNN_STEPS_UM: tuple[float, ...] = (4.0, 8.0)


@dataclass
class Candidate:
    """One candidate MA.

    Attributes
    ----------
    x, y
        Peak position in image px (float).
    radius_px
        Estimated lesion radius in image px (from the half-contrast region).
    saliency
        Saliency map value at the peak (Weber contrast, smoothed).
    features
        Named measurements (floats): see :func:`measure`.
    patch
        ``PATCH_SIZE × PATCH_SIZE`` float32 darkness around the centre on a
        ``PATCH_STEP_UM`` grid, in units of local texture (rows = y); for the ranker.
    mask, mask_origin
        Bool crop (image px) of the half-contrast region around the peak and its top-left
        ``(x0, y0)``: the lesion mask when no model mask is available (``source="saliency"``).
    patch_cnn
        ``(len(CNN_STEPS_UM), CNN_PATCH, CNN_PATCH)`` float16 input of the CNN ranker
        (:func:`cnn_patches`), or None.
    """

    x: float
    y: float
    radius_px: float
    saliency: float
    features: dict[str, float] = field(default_factory=dict)
    patch: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    mask: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    mask_origin: tuple[int, int] = (0, 0)
    patch_cnn: Optional[np.ndarray] = field(default=None, repr=False, compare=False)


def find_peaks(smap: SaliencyMap, min_z: float = MIN_PEAK_Z,
               max_candidates: int = MAX_CANDIDATES) -> np.ndarray:
    """Return working-grid ``(N, 2)`` ``(u, v)`` of saliency peaks inside the window and FOV.

    A peak is the maximum of a disc of :data:`PEAK_SEPARATION_UM` diameter, inside the FOV
    (eroded by one line length, where the margin fill is unreliable), with saliency at
    least ``min_z`` times the local noise. At most ``max_candidates``, by saliency / noise.
    """
    work_um = smap.work_um_per_px
    d = max(3, int(round(PEAK_SEPARATION_UM / work_um)) | 1)
    erode = max(3, int(round(150.0 / work_um)) | 1)
    # Peaks a little outside the window too: the refined centre may move inside it.
    pad = (REFINE_UM / work_um + 1) * smap.factor
    x0, y0, x1, y1 = smap.window
    # Only the window (plus pad) can hold a peak: filter there, with the filters' reach of
    # context, not over the saliency map's whole context margin.
    u0, v0 = smap.to_work(x0 - pad, y0 - pad)
    u1, v1 = smap.to_work(x1 + pad, y1 + pad)
    rows, cols = _box(smap.maps["saliency"].shape, (v0, v1), (u0, u1), max(d, erode) // 2 + 2)
    sal = smap.maps["saliency"][rows, cols]
    if sal.size == 0:
        return np.zeros((0, 2))
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
    is_max = sal >= cv2.dilate(sal, se)
    # Away from the aperture rim and from the image edge (a cropped circle is cut there).
    fov = cv2.erode(smap.maps["fov"][rows, cols].astype(np.uint8),
                    cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (erode, erode)),
                    borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    z = sal / smap.maps["noise"][rows, cols]
    ok = is_max & fov & (z >= min_z) & (sal > 0)
    vs, us = np.nonzero(ok)
    zs_all = z[vs, us]
    vs, us = vs + rows.start, us + cols.start
    xs, ys = smap.to_image(us.astype(np.float64), vs.astype(np.float64))
    inwin = (xs >= x0 - pad) & (xs < x1 + pad) & (ys >= y0 - pad) & (ys < y1 + pad)
    us, vs, zs = us[inwin], vs[inwin], zs_all[inwin]
    order = np.argsort(-zs, kind="stable")[:max_candidates]
    return np.column_stack([us[order], vs[order]]).astype(np.float64)


def _box(shape: tuple[int, int], v_range: tuple[float, float], u_range: tuple[float, float],
         halo: int) -> tuple[slice, slice]:
    """Rows and columns of ``shape`` covering ``v_range`` × ``u_range`` plus ``halo`` px.

    A local filter computed on this crop equals the whole map's inside the ranges: where
    the crop is cut inside the map, the halo (at least the filter's reach) holds the real
    context; where it meets the map's edge, the filter sees the same border either way.
    """
    h, w = shape
    r0 = max(0, int(math.floor(v_range[0])) - halo)
    r1 = min(h, int(math.ceil(v_range[1])) + halo + 1)
    c0 = max(0, int(math.floor(u_range[0])) - halo)
    c1 = min(w, int(math.ceil(u_range[1])) + halo + 1)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _sample(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` at float working-grid coordinates (any shape)."""
    return ndimage.map_coordinates(img, [np.asarray(v, np.float64), np.asarray(u, np.float64)],
                                   order=1, mode="nearest")


def _hessian_eigs(img: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale-normalised Hessian eigenvalues (l1 <= l2) of a Gaussian-smoothed image."""
    k = int(2 * math.ceil(4 * sigma) + 1)
    b = cv2.GaussianBlur(img, (k, k), sigma, borderType=cv2.BORDER_REFLECT)
    dxx = cv2.Sobel(b, cv2.CV_32F, 2, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    dyy = cv2.Sobel(b, cv2.CV_32F, 0, 2, ksize=3, borderType=cv2.BORDER_REFLECT)
    dxy = cv2.Sobel(b, cv2.CV_32F, 1, 1, ksize=3, borderType=cv2.BORDER_REFLECT) / 4.0
    tr = (dxx + dyy) / 2.0
    disc = np.sqrt(((dxx - dyy) / 2.0) ** 2 + dxy ** 2)
    s2 = sigma * sigma
    return (tr - disc) * s2, (tr + disc) * s2


def measure(smap: SaliencyMap, peaks_uv: np.ndarray,
            fov_center_xy: Optional[tuple[float, float]] = None,
            fov_radius_px: Optional[float] = None) -> list[Candidate]:
    """Measure each peak and return candidates with features.

    Features (all dimensionless or in µm):

    ``contrast``
        Weber contrast of the dot against the line-closing background (top-hat at peak).
    ``saliency``, ``z``
        Smoothed contrast, and that over the local noise (mean top-hat around).
    ``vessel``, ``vessel_ratio``
        Elongated-structure contrast near the peak (max in a 2-line-length box) and its
        ratio to the dot's contrast: a dot on or beside a vessel scores high.
    ``area_um2``, ``diameter_um``, ``elongation``, ``fill``
        Half-contrast region containing the peak: area, equivalent diameter, major/minor
        axis ratio, and area over its bounding circle (compactness).
    ``ray_min``, ``ray_mean``, ``ray_consistency``
        Rise of the green level from the centre outwards along 16 rays (Weber units): the
        weakest, the mean, and weakest over mean (a vessel has two weak directions).
    ``blob``, ``line``, ``blob_scale_um``
        Scale-normalised Hessian of the inverted green level: roundness response (smaller
        eigenvalue) at the best of three MA scales, elongation response, and that scale.
    ``red_contrast``
        Weber contrast in the red channel at the peak (dark red dot vs other dark things).
    ``radial``
        Distance from the FOV centre over the FOV radius (0 when unknown).
    """
    maps = smap.maps
    work_um = smap.work_um_per_px
    line = max(3, int(round(150.0 / work_um)))
    tophat, vessel, sal, noise = maps["tophat"], maps["vessel"], maps["saliency"], maps["noise"]
    g, bg = maps["green"], maps["background"]
    n = peaks_uv.shape[0]
    if n == 0:
        return []
    u, v = peaks_uv[:, 0], peaks_uv[:, 1]
    ui, vi = u.astype(int), v.astype(int)
    H, W = g.shape

    # Refine the centre to the top-hat centroid in a small window (MA centre, not a noise peak).
    # All windows at once: zero padding adds nothing to the sums of a window clipped at the edge.
    r0 = max(1, int(round(REFINE_UM / work_um)))
    padded = np.pad(tophat.astype(np.float64), r0)
    d = np.arange(-r0, r0 + 1)
    wgt = padded[(vi + r0)[:, None, None] + d[None, :, None], (ui + r0)[:, None, None] + d[None, None, :]]
    tot = wgt.sum(axis=(1, 2))
    safe = np.where(tot > 0, tot, 1.0)
    uc = np.where(tot > 0, ui + (wgt * d[None, None, :]).sum(axis=(1, 2)) / safe, u)
    vc = np.where(tot > 0, vi + (wgt * d[None, :, None]).sum(axis=(1, 2)) / safe, v)

    # Hessian of the inverted green (dots become bumps) at three MA scales.
    inv = (bg - g) / bg
    blob = np.full(n, -np.inf)
    linev = np.zeros(n)
    scale = np.zeros(n)
    sigmas = [max(0.7, sig_um / work_um) for sig_um in (12.0, 20.0, 32.0)]
    # Only at the peaks: the bounding box of the peaks plus the widest Gaussian and Sobel reach.
    rows, cols = _box(inv.shape, (vi.min(), vi.max()), (ui.min(), ui.max()), int(math.ceil(4 * max(sigmas))) + 2)
    lv, lu = vi - rows.start, ui - cols.start
    for sig in sigmas:
        l1, l2 = _hessian_eigs(inv[rows, cols], sig)
        b = -l2[lv, lu]  # both eigenvalues negative for a bump: -l2 > 0
        better = b > blob
        blob = np.where(better, b, blob)
        linev = np.where(better, (-l1[lv, lu]) - np.maximum(b, 0), linev)
        scale = np.where(better, sig * work_um, scale)

    # Radial profiles of the inverted green: a dot falls off in every direction.
    th = np.arange(N_RAYS) * 2 * np.pi / N_RAYS
    rr = np.arange(1, line + 1, dtype=np.float64)
    ru = uc[:, None, None] + np.cos(th)[None, :, None] * rr[None, None, :]
    rv = vc[:, None, None] + np.sin(th)[None, :, None] * rr[None, None, :]
    prof = _sample(inv, ru, rv)
    centre = _sample(inv, uc, vc)
    # Rotation-invariant profile descriptor at fixed physical radii, in units of local texture.
    tex = _sample(maps["texture"], uc, vc)
    pr = np.array(PROFILE_RADII_UM) / work_um
    pu = uc[:, None, None] + np.cos(th)[None, :, None] * pr[None, None, :]
    pv = vc[:, None, None] + np.sin(th)[None, :, None] * pr[None, None, :]
    pp = _sample(inv, pu, pv)
    base = pp[:, :, -1].mean(axis=1)
    pp = (pp - base[:, None, None]) / tex[:, None, None]
    p_mean, p_min, p_max = pp.mean(axis=1), pp.min(axis=1), pp.max(axis=1)
    # Appearance patch on a physical grid, same normalisation (for the learned ranker).
    off = (np.arange(PATCH_SIZE) - PATCH_SIZE // 2) * PATCH_STEP_UM / work_um
    gu = uc[:, None, None] + off[None, None, :]
    gv = vc[:, None, None] + off[None, :, None]
    patches = (_sample(inv, np.broadcast_to(gu, (n, PATCH_SIZE, PATCH_SIZE)),
                       np.broadcast_to(gv, (n, PATCH_SIZE, PATCH_SIZE)))
               - base[:, None, None]) / tex[:, None, None]
    rise = centre[:, None] - prof.min(axis=2)
    ray_min = rise.min(axis=1)
    ray_mean = rise.mean(axis=1)

    red = maps["red"]
    k = max(3, int(round(300.0 / work_um)) | 1)
    k = min(k, 255)
    rows, cols = _box(red.shape, (vi.min(), vi.max()), (ui.min(), ui.max()), k // 2 + 1)
    red_bg = np.zeros(red.shape, np.float32)  # read at the peaks only
    red_bg[rows, cols] = cv2.medianBlur(np.clip(np.rint(red[rows, cols]), 0, 255).astype(np.uint8), k)

    out = []
    for i in range(n):
        a0, a1 = max(0, vi[i] - line), min(H, vi[i] + line + 1)
        b0, b1 = max(0, ui[i] - line), min(W, ui[i] + line + 1)
        peak = float(tophat[vi[i], ui[i]])
        crop = tophat[a0:a1, b0:b1]
        region = (crop >= 0.5 * peak).astype(np.uint8)
        _, labels = cv2.connectedComponents(region, connectivity=8)
        lab = labels[vi[i] - a0, ui[i] - b0]
        comp = labels == lab if lab > 0 else np.zeros_like(region, bool)
        area = max(1, int(comp.sum()))
        ys, xs = np.nonzero(comp)
        if xs.size >= 2:
            # Eigenvalues of the pixel covariance (+ 1/12, a pixel's own spread), closed form.
            dx, dy = xs - xs.mean(), ys - ys.mean()
            m = xs.size - 1
            sxx, syy, sxy = dx @ dx / m + 1 / 12.0, dy @ dy / m + 1 / 12.0, dx @ dy / m
            half, root = (sxx + syy) / 2.0, math.hypot((sxx - syy) / 2.0, sxy)
            elong = float(np.sqrt(max(half + root, 1e-9) / max(half - root, 1e-9)))
            rmax = float(np.sqrt(dx * dx + dy * dy).max()) + 0.5
        else:
            elong, rmax = 1.0, 0.5
        if xs.size:
            sub = comp[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            f = smap.factor
            mask_crop = sub.repeat(f, axis=0).repeat(f, axis=1) if f > 1 else sub.copy()
            mask_origin = (smap.x0 + (b0 + int(xs.min())) * f, smap.y0 + (a0 + int(ys.min())) * f)
        else:
            mask_crop, mask_origin = None, (0, 0)
        vbox = vessel[a0:a1, b0:b1]
        vmax = float(vbox.max()) if vbox.size else 0.0
        diam_work = 2.0 * math.sqrt(area / math.pi)
        x, y = smap.to_image(uc[i], vc[i])
        radial = 0.0
        if fov_center_xy is not None and fov_radius_px:
            radial = float(math.hypot(x - fov_center_xy[0], y - fov_center_xy[1]) / fov_radius_px)
        rc = float((red_bg[vi[i], ui[i]] - red[vi[i], ui[i]]) / max(red_bg[vi[i], ui[i]], 1.0))
        feats = {
            "contrast": peak,
            "saliency": float(sal[vi[i], ui[i]]),
            "z": float(sal[vi[i], ui[i]] / noise[vi[i], ui[i]]),
            "vessel": vmax,
            "vessel_ratio": vmax / max(peak, 1e-4),
            "area_um2": area * work_um ** 2,
            "diameter_um": diam_work * work_um,
            "elongation": elong,
            "fill": area / (math.pi * rmax ** 2),
            "ray_min": float(ray_min[i]),
            "ray_mean": float(ray_mean[i]),
            "ray_consistency": float(ray_min[i] / max(ray_mean[i], 1e-4)),
            "blob": float(blob[i]),
            "line": float(linev[i]),
            "blob_scale_um": float(scale[i]),
            "red_contrast": rc,
            "radial": radial,
            "texture": float(tex[i]),
            "contrast_tex": peak / float(tex[i]),
        }
        for j, r_um in enumerate(PROFILE_RADII_UM[:-1]):
            feats[f"p_mean_{int(r_um)}"] = float(p_mean[i, j])
            feats[f"p_min_{int(r_um)}"] = float(p_min[i, j])
            feats[f"p_max_{int(r_um)}"] = float(p_max[i, j])
        out.append(Candidate(x=float(x), y=float(y), radius_px=diam_work * smap.factor / 2.0,
                             saliency=feats["saliency"], features=feats,
                             patch=patches[i].astype(np.float32),
                             mask=mask_crop, mask_origin=mask_origin))
    return out


def cnn_patches(photo_rgb: np.ndarray, smap: SaliencyMap, xy: np.ndarray) -> np.ndarray:
    """Return the CNN ranker's input for candidates at image px ``xy`` (N, 2).

    Channel 0 samples the full-resolution green channel on a ``CNN_STEPS_UM[0]`` grid (the
    dot at full detail, which the 8 µm working grid blurs away for the faint ones); channel
    1 the block-averaged working green on a ``CNN_STEPS_UM[1]`` grid (context). Each is
    ``(background - green) / background / texture`` with the background and texture of the
    saliency maps at the centre, so a value reads "darker than the surrounding retina, in
    units of its texture" on any camera. Depends only on the photograph and the candidate's
    own centre, so a gaze window gives the same patch as the whole image.
    """
    n = len(xy)
    out = np.zeros((n, len(CNN_STEPS_UM), CNN_PATCH, CNN_PATCH), np.float16)
    if n == 0:
        return out
    xy = np.asarray(xy, np.float64)
    u, v = smap.to_work(xy[:, 0], xy[:, 1])
    bg = np.maximum(_sample(smap.maps["background"], u, v), 1.0)
    tex = np.maximum(_sample(smap.maps["texture"], u, v), 1e-3)
    grid = np.arange(CNN_PATCH) - (CNN_PATCH - 1) / 2.0
    for ch, step_um in enumerate(CNN_STEPS_UM):
        if ch == 0:
            off = grid * step_um / smap.um_per_px
            x = xy[:, 0, None, None] + off[None, None, :]
            y = xy[:, 1, None, None] + off[None, :, None]
            x = np.broadcast_to(x, (n, CNN_PATCH, CNN_PATCH))
            y = np.broadcast_to(y, (n, CNN_PATCH, CNN_PATCH))
            r = int(math.ceil(abs(off).max())) + 2
            x0 = max(0, int(np.floor(xy[:, 0].min())) - r)
            y0 = max(0, int(np.floor(xy[:, 1].min())) - r)
            x1 = min(photo_rgb.shape[1], int(np.ceil(xy[:, 0].max())) + r + 1)
            y1 = min(photo_rgb.shape[0], int(np.ceil(xy[:, 1].max())) + r + 1)
            green = photo_rgb[y0:y1, x0:x1, 1].astype(np.float32)
            vals = _sample(green, x - x0, y - y0)
        else:
            off = grid * step_um / smap.work_um_per_px
            uu = np.broadcast_to(u[:, None, None] + off[None, None, :], (n, CNN_PATCH, CNN_PATCH))
            vv = np.broadcast_to(v[:, None, None] + off[None, :, None], (n, CNN_PATCH, CNN_PATCH))
            vals = _sample(smap.maps["green"], uu, vv)
        norm = (bg[:, None, None] - vals) / bg[:, None, None] / tex[:, None, None]
        out[:, ch] = np.clip(norm, -30.0, 30.0).astype(np.float16)
    return out


def detect(photo_rgb: np.ndarray, fov: FieldOfView, um_per_px: float,
           window: Optional[tuple[int, int, int, int]] = None,
           params: SaliencyParams = SaliencyParams(),
           max_candidates: int = MAX_CANDIDATES, rank: bool = True) -> list[Candidate]:
    """Find candidate MAs in a photograph (scan mode) or a window of it (gaze mode).

    Parameters
    ----------
    photo_rgb
        H×W×3 uint8 RGB photograph.
    fov
        :class:`appliance.imaging.fov.FieldOfView` of the photograph.
    um_per_px
        Image pixel size in µm.
    window
        ``(x0, y0, x1, y1)`` image-px region of interest, or None for the whole FOV. Only
        candidates inside it are returned, computed with enough context that they equal the
        whole-image candidates there.
    params
        Saliency sizes.
    max_candidates
        Cap, most salient (over local noise) first.
    rank
        Run the CNN ranker (when shipped) over the window's candidates in one batch and
        store ``features["cnn_prob"]``; off for caches that outlive a model.

    Returns
    -------
    list[Candidate]
        Unranked candidates with features; rank them with
        :func:`appliance.glance.dkf.score_candidates`.
    """
    smap = compute_saliency(photo_rgb, fov.mask, um_per_px, window=window, params=params)
    peaks = find_peaks(smap, max_candidates=max_candidates)
    cands = measure(smap, peaks, fov.center_xy, fov.radius_px)
    x0, y0, x1, y1 = smap.window
    cands = [c for c in cands if x0 <= c.x < x1 and y0 <= c.y < y1]
    if cands:
        patches = cnn_patches(photo_rgb, smap, np.array([[c.x, c.y] for c in cands]))
        for c, p in zip(cands, patches):
            c.patch_cnn = p
        if rank:
            from appliance.glance.cnn_ranker import annotate  # dkf imports this module

            annotate(cands)
    logger.debug("%d candidates in window %s", len(cands), smap.window)
    return cands
