"""Domain-knowledge filter (DKF): turn candidates into ranked, scored lesions.

Each candidate gets a base score (the geometric mean of the learned ranker's MA
probability, when ``ranker.json`` is present, and a hand-built profile score; else the hand
score alone) multiplied down by every
domain rule it breaks. Nothing is dropped: the FROC sweeps the score and the clinician
may still see a low-scoring lesion, so a broken rule lowers the score and records a reason
instead. ``keep`` says whether every rule passed and the score reaches the threshold.

The rules (all in physical units, so they hold on any camera):

- inside the FOV: the aperture rim and the black margin hold no retina;
- size: an MA is 10–125 µm across (annotated blobs up to ~160 µm); bigger dark regions are
  haemorrhages, smaller ones are noise;
- roundness: an MA is a round dot; an elongated region is a vessel segment;
- contrast: a dot must stand out from the local texture, or it is noise;
- not on a vessel: a dot whose surroundings hold a stronger elongated structure is usually
  a vessel crossing, bend or fragment.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from appliance.errors import ModelError
from appliance.glance.candidates import Candidate
from appliance.glance.cnn_ranker import CnnRanker, combine, load_cnn_ranker
from appliance.glance.ranker import Ranker, load_ranker

if TYPE_CHECKING:
    from appliance.glance.lesions import Lesion
    from appliance.glance.predictor import PromptResult
    from appliance.imaging.fov import FieldOfView

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DkfParams:
    """Limits of the domain rules and the penalty for breaking each.

    Attributes
    ----------
    min_diameter_um, max_diameter_um
        Equivalent-diameter limits of the lesion region.
    max_elongation
        Major/minor axis ratio above which the region is a vessel segment.
    min_contrast_tex
        Peak contrast over local texture RMS below which the dot is noise.
    max_vessel_ratio
        Nearby elongated-structure contrast over the dot's contrast above which the dot
        sits on a vessel.
    penalty
        Score factor per broken rule (outside-FOV uses ``penalty ** 3``).
    duplicate_um
        Candidates closer than this to a better one are the same lesion; they are scored
        down by ``duplicate_penalty`` (a second hit on one MA is a false positive).
    duplicate_penalty
        Factor applied to duplicates.
    keep_threshold
        Minimum score for ``keep``.
    use_mask_measures
        Let a model (SAM) mask's size and shape feed the rules. Off by default: the
        zero-shot LiteMedSAM fills its prompt box whatever is inside (DESIGN.md), so its
        masks would penalise every prompted candidate alike and only scramble the ranking
        against unprompted ones. Turn on once the decoder is fine-tuned on MAs.
    """

    min_diameter_um: float = 15.0
    max_diameter_um: float = 200.0
    max_elongation: float = 3.0
    min_contrast_tex: float = 1.0
    max_vessel_ratio: float = 4.0
    penalty: float = 0.5
    duplicate_um: float = 100.0
    duplicate_penalty: float = 0.01
    keep_threshold: float = 0.5
    use_mask_measures: bool = False


@dataclass
class ScoredCandidate:
    """A candidate with its DKF verdict.

    Attributes
    ----------
    candidate
        The candidate as detected.
    score
        0..1; ranks lesions.
    keep
        Every rule passed and ``score >= keep_threshold``.
    reasons
        One short reason per broken rule (empty when all passed).
    base_score
        The score before rule penalties (ranker/hand blend, or hand score).
    measures
        The size / shape values the rules used (from the lesion mask when one was given).
    """

    candidate: Candidate
    score: float
    keep: bool
    reasons: list[str] = field(default_factory=list)
    base_score: float = 0.0
    measures: dict[str, float] = field(default_factory=dict)


def hand_score(features: dict[str, float]) -> float:
    """Hand-built MA-likeness in 0..1 from camera-independent features (no training).

    ``h = (p_min_20 - max(p_max_80, 0)) / max(vessel_ratio, 0.5) × ray_consistency``:

    - ``p_min_20``: the *weakest* darkness 20 µm from the centre over 16 directions, in
      units of local texture: a dot is dark all round, a vessel is not across it;
    - minus ``p_max_80``: the *strongest* darkness 80 µm out: a dark neighbour there (a
      vessel, a haemorrhage) means the peak is part of something bigger;
    - over ``vessel_ratio``: elongated structure nearby relative to the dot's contrast;
    - times the rotational consistency of the profile.

    Mapped to 0..1 by ``h / (h + 2)``. Alone it reaches a CPM of ~0.11 on IDRiD_01–12
    (the learned ranker ~0.12 cross-validated).
    """
    h = features.get("p_min_20", 0.0) - max(features.get("p_max_80", 0.0), 0.0)
    h /= max(features.get("vessel_ratio", 1.0), 0.5)
    h *= float(np.clip(features.get("ray_consistency", 0.0), 0.0, 1.0))
    return float(h / (h + 2.0)) if h > 0 else 0.0


def blend(probability: np.ndarray, hand: np.ndarray) -> np.ndarray:
    """Geometric mean of the ranker's probability and the hand score.

    The two err differently (learned appearance vs. a physical profile rule); their
    geometric mean ranks better than either on IDRiD_01–12 out of fold (CPM 0.125 vs
    0.122 ranker, 0.114 hand), and a candidate must convince both to score high.
    """
    return np.sqrt(np.clip(probability, 0.0, 1.0) * np.clip(hand, 0.0, 1.0))


def mask_measures(mask: np.ndarray, um_per_px: float) -> dict[str, float]:
    """Size and shape of a lesion mask crop (bool, image px) in µm.

    Returns ``diameter_um`` (equivalent), ``area_um2``, ``elongation`` (from second moments).
    """
    ys, xs = np.nonzero(np.asarray(mask, bool))
    area = max(1, xs.size)
    out = {"area_um2": area * um_per_px ** 2,
           "diameter_um": 2.0 * math.sqrt(area / math.pi) * um_per_px, "elongation": 1.0}
    if xs.size >= 2:
        cov = np.cov(np.vstack([xs, ys]).astype(np.float64)) + np.eye(2) / 12.0
        ev = np.linalg.eigvalsh(cov)
        out["elongation"] = float(math.sqrt(max(ev[1], 1e-9) / max(ev[0], 1e-9)))
    return out


def apply_rules(candidate: Candidate, measures: dict[str, float], fov_mask: Optional[np.ndarray],
                params: DkfParams = DkfParams()) -> list[str]:
    """Return the reasons the candidate breaks domain rules (empty list: all passed)."""
    f = candidate.features
    reasons = []
    if fov_mask is not None:
        xi, yi = int(round(candidate.x)), int(round(candidate.y))
        h, w = fov_mask.shape
        if not (0 <= xi < w and 0 <= yi < h and fov_mask[yi, xi]):
            reasons.append("outside the field of view: no retina there")  # rim / black margin
    d = measures.get("diameter_um", f.get("diameter_um", 0.0))
    if d < params.min_diameter_um:
        reasons.append(f"too small ({d:.0f} µm): below MA size, likely noise")
    elif d > params.max_diameter_um:
        reasons.append(f"too large ({d:.0f} µm): a haemorrhage or dark region, not an MA")
    e = measures.get("elongation", f.get("elongation", 1.0))
    if e > params.max_elongation:
        reasons.append(f"elongated (axis ratio {e:.1f}): a vessel segment, not a round dot")
    c = f.get("contrast_tex", 0.0)
    if c < params.min_contrast_tex:
        reasons.append(f"low contrast ({c:.1f}× texture): indistinguishable from noise")
    v = f.get("vessel_ratio", 0.0)
    if v > params.max_vessel_ratio:
        reasons.append(f"on a vessel (vessel/dot contrast {v:.1f}): crossing or fragment")
    return reasons


def score_candidates(candidates: Sequence[Candidate], fov_mask: Optional[np.ndarray],
                     um_per_px: float,
                     masks: Optional[Sequence[Optional[tuple[np.ndarray, int, int]]]] = None,
                     params: DkfParams = DkfParams(),
                     ranker: Optional[Ranker] = None, ranker_path: Optional[Path] = None,
                     use_ranker: bool = True, base: Optional[np.ndarray] = None,
                     cnn: Optional[CnnRanker] = None) -> list[ScoredCandidate]:
    """Score candidates with the ranker and the domain rules; return them best first.

    Parameters
    ----------
    candidates
        From :func:`appliance.glance.candidates.detect`.
    fov_mask
        H×W bool FOV of the whole image (or None to skip the FOV rule).
    um_per_px
        Image pixel size in µm.
    masks
        Optional lesion mask per candidate: ``(bool crop, x0, y0)`` in image px (e.g. from
        the SAM decoder) or None; used by the size / shape rules only when
        ``params.use_mask_measures``; otherwise the candidate's own half-contrast region is.
    params
        Rule limits and penalties.
    ranker, ranker_path, use_ranker
        The feature ranker (default: ``appliance/glance/ranker.json`` when present; one
        passed explicitly is used alone, without the CNN, so a ranker being fitted is scored
        as itself);
        ``use_ranker=False`` ranks with :func:`hand_score` alone.
    base
        Precomputed base scores, one per candidate (model selection); overrides the rankers.
    cnn
        The CNN ranker (default: ``appliance/glance/ranker_cnn.onnx`` when present). Used
        ahead of the feature ranker when every candidate has a CNN patch or probability.

    Returns
    -------
    list[ScoredCandidate]
        Every candidate, in descending score. Duplicates (within ``duplicate_um`` of a
        better candidate) are scored down, not removed.
    """
    if masks is not None and len(masks) != len(candidates):
        raise ValueError("masks must hold one entry (or None) per candidate.")
    if not candidates:
        return []
    if base is not None:
        base = np.asarray(base, np.float64)
        if base.shape != (len(candidates),):
            raise ValueError("base must hold one score per candidate.")
    elif use_ranker and ranker is None and _cnn_ready(candidates, cnn := cnn or load_cnn_ranker()):
        base = _cnn_base(candidates, cnn)
    else:
        base = _feature_base(candidates, ranker, ranker_path, use_ranker)
    return _rules_and_duplicates(candidates, base, fov_mask, um_per_px, masks, params)


def _cnn_ready(candidates: Sequence[Candidate], cnn: Optional[CnnRanker]) -> bool:
    return cnn is not None and all("cnn_prob" in c.features or c.patch_cnn is not None
                                   for c in candidates)


def _cnn_base(candidates: Sequence[Candidate], cnn: CnnRanker) -> np.ndarray:
    """CNN base scores, running the network once over the candidates not yet scored."""
    todo = [c for c in candidates if "cnn_prob" not in c.features]
    if todo:
        prob = cnn.probability(np.stack([c.patch_cnn for c in todo]))
        for c, p in zip(todo, prob):
            c.features["cnn_prob"] = float(p)
    p = np.array([c.features["cnn_prob"] for c in candidates])
    p_mlp = None
    if cnn.blend == "cnn_mlp_hand":
        ranker = load_ranker()
        if ranker is None or (ranker.use_patch and any(c.patch is None for c in candidates)):
            raise ModelError("The CNN ranker blends with the feature ranker, which is missing "
                             "(appliance/glance/ranker.json) or lacks the candidates' patches.")
        p_mlp = ranker.probability([c.features for c in candidates],
                                   np.stack([c.patch for c in candidates]) if ranker.use_patch else None)
    return combine(p, np.array([hand_score(c.features) for c in candidates]), cnn.blend, p_mlp)


def _feature_base(candidates: Sequence[Candidate], ranker: Optional[Ranker],
                  ranker_path: Optional[Path], use_ranker: bool) -> np.ndarray:
    """Base scores from the feature ranker blended with the hand score (or hand alone)."""
    if use_ranker and ranker is None:
        ranker = load_ranker(ranker_path)
    if use_ranker and ranker is not None and (not ranker.use_patch
                                              or all(c.patch is not None for c in candidates)):
        patches = np.stack([c.patch for c in candidates]) if ranker.use_patch else None
        prob = ranker.probability([c.features for c in candidates], patches)
        base = blend(prob, np.array([hand_score(c.features) for c in candidates]))
    else:
        base = np.array([hand_score(c.features) for c in candidates])
    return base


def _rules_and_duplicates(candidates, base, fov_mask, um_per_px, masks, params) -> list[ScoredCandidate]:
    out = []
    for i, cand in enumerate(candidates):
        measures: dict[str, float] = {}
        if masks is not None and masks[i] is not None and params.use_mask_measures:
            measures = mask_measures(masks[i][0], um_per_px)
        reasons = apply_rules(cand, measures, fov_mask, params)
        factor = 1.0
        for reason in reasons:
            factor *= params.penalty ** (3 if reason.startswith("outside") else 1)
        score = float(base[i]) * factor
        out.append(ScoredCandidate(cand, score, False, reasons, float(base[i]), measures))
    out.sort(key=lambda s: -s.score)
    # One lesion, one candidate: later (lower) peaks near a better one are duplicates.
    dup_px = params.duplicate_um / um_per_px
    kept_xy: list[tuple[float, float]] = []
    for sc in out:
        x, y = sc.candidate.x, sc.candidate.y
        if any((x - kx) ** 2 + (y - ky) ** 2 < dup_px ** 2 for kx, ky in kept_xy):
            sc.score *= params.duplicate_penalty
            sc.reasons.append("duplicate: a better candidate marks the same lesion")
        else:
            kept_xy.append((x, y))
    out.sort(key=lambda s: -s.score)
    for sc in out:
        sc.keep = not sc.reasons and sc.score >= params.keep_threshold
    return out


# -- per-candidate API used by the glance engine (one cell at a time) ---------------------------

#: SAM box half-side = ``radius_px × PROMPT_BOX_SCALE`` (the lesion plus its surroundings).
PROMPT_BOX_SCALE = 2.5
#: Smallest box half-side in µm, so a tiny candidate still gives the decoder some context.
MIN_BOX_HALF_UM = 50.0
#: Candidates scoring below this are dropped from the lesion list: with ~4000 raw peaks per
#: IDRiD photograph it leaves ~200-350, far more than the FROC's 8 FP/image reads.
SCORE_FLOOR = 0.01


def min_box_half_px(um_per_px: float) -> float:
    """Smallest prompt-box half-side in image px (:data:`MIN_BOX_HALF_UM`)."""
    return MIN_BOX_HALF_UM / um_per_px


def base_score(candidate: Candidate) -> float:
    """The candidate's score before rule penalties, with the shipped rankers.

    With the CNN ranker (``ranker_cnn.onnx``) and a CNN patch: :func:`combine` of its
    probability (``features["cnn_prob"]``, which :func:`appliance.glance.candidates.detect`
    fills for a whole window in one batch) and :func:`hand_score`. Otherwise :func:`blend`
    of the feature ranker's probability and :func:`hand_score`, or the hand score alone.

    Cached in ``candidate.features["base_score"]`` (the ranker costs ~0.1 ms a call).
    """
    if "base_score" not in candidate.features:
        prime_base_scores([candidate])
    return float(candidate.features["base_score"])


def prime_base_scores(candidates: Sequence[Candidate]) -> None:
    """Fill ``features["base_score"]`` (:func:`base_score`) of many candidates at once.

    The CNN runs once for all of them: the glance engine calls this once per detection
    window instead of the ranker once per candidate (a tenth of a fixation's time went to
    per-candidate calls).
    """
    todo = [c for c in candidates if "base_score" not in c.features]
    if not todo:
        return
    cnn = load_cnn_ranker()
    if cnn is not None and _cnn_ready(todo, cnn):
        values = list(_cnn_base(todo, cnn))
    else:  # one at a time: the CNN for a candidate with its patch, else the feature ranker
        values = [(_cnn_base([c], cnn) if _cnn_ready([c], cnn) else _feature_base([c], None, None, True))[0]
                  for c in todo]
    for c, value in zip(todo, values):
        c.features["base_score"] = float(value)


def to_lesion(candidate: Candidate, prompt: Optional[PromptResult], rgb: np.ndarray, fov: FieldOfView,
              um_per_px: float, lesion_id: int, params: DkfParams = DkfParams()) -> Optional[Lesion]:
    """Score one candidate and turn it into a :class:`~appliance.glance.lesions.Lesion`.

    Parameters
    ----------
    candidate
        From :func:`appliance.glance.candidates.detect`.
    prompt
        The decoder's :class:`~appliance.glance.predictor.PromptResult` for the candidate's
        box, or None (saliency-only): its mask feeds the size / roundness rules and becomes
        the lesion mask (``source="model"``); otherwise the candidate's half-contrast region
        is the mask (``source="saliency"``).
    rgb
        The photograph (unused today; kept so mask-based contrast can be added).
    fov
        :class:`~appliance.imaging.fov.FieldOfView`.
    um_per_px
        Image pixel size in µm.
    lesion_id
        The id to give the lesion.
    params
        Rule limits.

    Returns
    -------
    Lesion or None
        None when the score is below :data:`SCORE_FLOOR`. ``x, y`` are the candidate's
        refined centre (the dark dot's centroid); duplicates are not suppressed here, since
        that needs the neighbours (see :func:`score_candidates`).
    """
    from appliance.glance.lesions import Lesion

    if prompt is not None and getattr(prompt, "mask", None) is not None and np.any(prompt.mask):
        mask, x0, y0, source = np.asarray(prompt.mask, bool), int(prompt.x0), int(prompt.y0), "model"
    elif candidate.mask is not None and candidate.mask.any():
        mask, (x0, y0), source = candidate.mask, candidate.mask_origin, "saliency"
    else:
        r = max(1, int(round(candidate.radius_px)))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        mask = xx ** 2 + yy ** 2 <= r * r
        x0, y0, source = int(round(candidate.x)) - r, int(round(candidate.y)) - r, "saliency"
    ys, xs = np.nonzero(mask)
    if source == "model" and not (x0 + xs.min() <= candidate.x <= x0 + xs.max() + 1
                                  and y0 + ys.min() <= candidate.y <= y0 + ys.max() + 1):
        # The decoder outlined something beside the dot (e.g. at the image edge): that is
        # not this lesion's mask, so keep the dot's own half-contrast region.
        if candidate.mask is not None and candidate.mask.any():
            mask, (x0, y0), source = candidate.mask, candidate.mask_origin, "saliency"
            ys, xs = np.nonzero(mask)
    mask = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    x0, y0 = x0 + int(xs.min()), y0 + int(ys.min())
    measures = mask_measures(mask, um_per_px) if source == "model" and params.use_mask_measures else {}
    reasons = apply_rules(candidate, measures, getattr(fov, "mask", None), params)
    base = base_score(candidate)
    score = base
    for reason in reasons:
        score *= params.penalty ** (3 if reason.startswith("outside") else 1)
    if score < SCORE_FLOOR:
        return None
    feats = dict(candidate.features)
    feats.update({f"mask_{k}": v for k, v in measures.items()})
    feats["rules_broken"] = float(len(reasons))
    return Lesion(id=int(lesion_id), x=float(candidate.x), y=float(candidate.y),
                  area_px=int(mask.sum()), bbox=(x0, y0, x0 + mask.shape[1], y0 + mask.shape[0]),
                  score=float(min(1.0, max(0.0, score))), source=source, mask=mask, features=feats)
