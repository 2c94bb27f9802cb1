"""Domain-knowledge filter: rules, scores, duplicates, the learned ranker's file."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.glance.candidates import Candidate, detect
from appliance.glance.dkf import DkfParams, apply_rules, hand_score, mask_measures, score_candidates
from appliance.glance.ranker import DEFAULT_RANKER_PATH, Ranker, load_ranker

SYN_UM = 8.0  # µm per px of conftest.synthetic_fundus

GOOD = {"diameter_um": 60.0, "elongation": 1.2, "contrast_tex": 6.0, "vessel_ratio": 0.5,
        "ray_min": 0.2, "texture": 0.02, "ray_consistency": 0.8, "p_min_20": 4.0, "p_max_80": 0.5}


def _cand(x=50.0, y=50.0, **over):
    return Candidate(x, y, 4.0, 0.1, {**GOOD, **over})


def test_good_dot_passes_every_rule():
    fov = np.ones((100, 100), bool)
    assert apply_rules(_cand(), {}, fov) == []


@pytest.mark.parametrize("over, word", [
    ({"diameter_um": 5.0}, "small"), ({"diameter_um": 400.0}, "large"),
    ({"elongation": 5.0}, "elongated"), ({"contrast_tex": 0.2}, "contrast"),
    ({"vessel_ratio": 9.0}, "vessel"),
])
def test_each_rule_gives_a_reason(over, word):
    reasons = apply_rules(_cand(**over), {}, None)
    assert len(reasons) == 1 and word in reasons[0]


def test_outside_fov_and_mask_measures_override_features():
    fov = np.zeros((100, 100), bool)
    assert any("field of view" in r for r in apply_rules(_cand(), {}, fov))
    big = np.ones((100, 100), bool)  # a mask filling a 100 px box: 400 µm at 4 µm/px
    m = mask_measures(big, 4.0)
    assert m["diameter_um"] > 300
    assert any("large" in r for r in apply_rules(_cand(), m, None))


def test_hand_score_prefers_contrast_and_round_profiles():
    assert hand_score(GOOD) > hand_score({**GOOD, "p_min_20": 1.0})
    assert hand_score(GOOD) > hand_score({**GOOD, "p_max_80": 3.0})
    assert hand_score(GOOD) > hand_score({**GOOD, "vessel_ratio": 3.0})
    assert hand_score(GOOD) > hand_score({**GOOD, "ray_consistency": 0.1})
    assert 0.0 <= hand_score({}) <= 1.0


def test_scores_rank_rule_breakers_and_duplicates_down_but_keep_them():
    fov = np.ones((200, 200), bool)
    cands = [_cand(50, 50), _cand(52, 50), _cand(150, 150, elongation=6.0)]
    out = score_candidates(cands, fov, 4.0, use_ranker=False)
    assert len(out) == 3
    assert out[0].candidate is cands[0] and out[0].keep and out[0].reasons == []
    dup = next(s for s in out if s.candidate is cands[1])
    assert "duplicate" in dup.reasons[-1] and not dup.keep
    el = next(s for s in out if s.candidate is cands[2])
    assert el.score == pytest.approx(el.base_score * DkfParams().penalty)
    assert [s.score for s in out] == sorted((s.score for s in out), reverse=True)
    assert all(0.0 <= s.score <= 1.0 for s in out)


def test_masks_must_match_candidates():
    with pytest.raises(ValueError):
        score_candidates([_cand()], None, 4.0, masks=[], use_ranker=False)


def test_synthetic_dot_outranks_vessel_candidates(syn):
    rgb, fov, dot, _ = syn
    scored = score_candidates(detect(rgb, fov, SYN_UM), fov.mask, SYN_UM)
    top = scored[0].candidate
    assert np.hypot(top.x - dot[0], top.y - dot[1]) < 2.0


def test_real_crop_microaneurysms_rank_first(real_crop):
    rgb, fov, mas = real_crop
    scored = score_candidates(detect(rgb, fov, 10.0), fov.mask, 10.0, use_ranker=False)
    top2 = [(s.candidate.x, s.candidate.y) for s in scored[:2]]
    for xy in mas:
        assert min(np.hypot(x - xy[0], y - xy[1]) for x, y in top2) < 3.0


def test_committed_ranker_loads_and_round_trips():
    ranker = load_ranker()
    if ranker is None:
        pytest.skip(f"no ranker at {DEFAULT_RANKER_PATH}")
    again = Ranker.from_json(ranker.to_json())
    rows = [GOOD, {**GOOD, "contrast_tex": 1.0}]
    patches = np.zeros((2, 15, 15), np.float32) if ranker.use_patch else None
    p1 = ranker.probability(rows, patches)
    p2 = again.probability(rows, patches)
    assert np.all((p1 >= 0) & (p1 <= 1))
    np.testing.assert_allclose(p1, p2, rtol=1e-3)


def test_to_lesion_uses_the_saliency_mask_without_a_prompt(syn):
    from appliance.glance.dkf import to_lesion

    rgb, fov, dot, _ = syn
    cands = detect(rgb, fov, SYN_UM)
    best = min(cands, key=lambda c: np.hypot(c.x - dot[0], c.y - dot[1]))
    lesion = to_lesion(best, None, rgb, fov, SYN_UM, lesion_id=7)
    assert lesion is not None and lesion.id == 7 and lesion.source == "saliency"
    x0, y0, x1, y1 = lesion.bbox
    assert lesion.mask.shape == (y1 - y0, x1 - x0)
    assert lesion.area_px == int(lesion.mask.sum()) > 0
    assert x0 <= dot[0] < x1 and y0 <= dot[1] < y1
    assert 0.0 < lesion.score <= 1.0


def test_to_lesion_with_a_box_filling_model_mask_is_penalised_only_on_request(syn):
    from types import SimpleNamespace

    from appliance.glance.dkf import to_lesion

    rgb, fov, dot, _ = syn
    cands = detect(rgb, fov, SYN_UM)
    best = min(cands, key=lambda c: np.hypot(c.x - dot[0], c.y - dot[1]))
    plain = to_lesion(best, None, rgb, fov, SYN_UM, lesion_id=1)
    prompt = SimpleNamespace(mask=np.ones((60, 60), bool), x0=int(dot[0]) - 30, y0=int(dot[1]) - 30)
    same = to_lesion(best, prompt, rgb, fov, SYN_UM, lesion_id=1)
    assert same.source == "model" and same.score == pytest.approx(plain.score)  # rules ignore it
    boxed = to_lesion(best, prompt, rgb, fov, SYN_UM, lesion_id=1,
                      params=DkfParams(use_mask_measures=True))
    assert boxed.source == "model"
    assert boxed.score < plain.score  # 480 µm across: too large for an MA


def test_real_idrid_window_ranks_an_annotated_ma_high(idrid_dir):
    """IDRiD_03 (tuning split): in a 400 px gaze window around its clearest MAs, an
    annotated MA is among the three best-scored candidates."""
    import cv2

    from appliance.eval.froc import ground_truth_from_mask, match_lesions
    from appliance.imaging.fov import find_fov
    from appliance.imaging.scale import um_per_px

    rgb = cv2.cvtColor(cv2.imread(str(idrid_dir / "images" / "IDRiD_03.jpg")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(idrid_dir / "masks" / "IDRiD_03_MA.png"), cv2.IMREAD_GRAYSCALE)
    truth = ground_truth_from_mask(mask)
    fov = find_fov(rgb)
    scale = um_per_px(fov.diameter_px, 50.0)
    # The window centred on the densest cluster of annotated MAs.
    c = truth.centers_xy
    counts = [(np.hypot(*(c - p).T) < 200).sum() for p in c]
    cx, cy = c[int(np.argmax(counts))]
    win = (int(cx) - 200, int(cy) - 200, int(cx) + 200, int(cy) + 200)
    scored = score_candidates(detect(rgb, fov, scale, window=win), fov.mask, scale)
    assert scored
    xy = np.array([[s.candidate.x, s.candidate.y] for s in scored[:3]])
    hits = match_lesions(xy, np.array([s.score for s in scored[:3]]), truth)
    assert hits.any()


def _cnn_or_skip():
    from appliance.glance.cnn_ranker import DEFAULT_CNN_PATH, load_cnn_ranker

    cnn = load_cnn_ranker()
    if cnn is None:
        pytest.skip(f"no CNN ranker at {DEFAULT_CNN_PATH}")
    return cnn


def test_committed_cnn_ranker_matches_its_sha256_and_metadata():
    import json

    from appliance.glance.candidates import CNN_PATCH, CNN_STEPS_UM
    from appliance.glance.cnn_ranker import BLENDS, DEFAULT_CNN_PATH, sha256_file

    cnn = _cnn_or_skip()
    meta = json.loads(DEFAULT_CNN_PATH.with_suffix(".json").read_text())
    assert sha256_file(DEFAULT_CNN_PATH) == meta["sha256"] == cnn.meta["sha256"]
    assert DEFAULT_CNN_PATH.stat().st_size < 2 * 1024 * 1024
    assert meta["input"]["shape"][1:] == [len(CNN_STEPS_UM), CNN_PATCH, CNN_PATCH]
    assert meta["input"]["steps_um"] == list(CNN_STEPS_UM)
    assert cnn.blend in BLENDS
    assert all(i.startswith("IDRiD_") and int(i[6:]) <= 12
               for i in meta["trained_on"] + meta["early_stopping_on"])


def test_an_altered_cnn_ranker_is_refused(tmp_path):
    import shutil

    from appliance.errors import ModelError
    from appliance.glance.cnn_ranker import DEFAULT_CNN_PATH, load_cnn_ranker

    _cnn_or_skip()
    bad = tmp_path / "ranker_cnn.onnx"
    shutil.copy(DEFAULT_CNN_PATH.with_suffix(".json"), bad.with_suffix(".json"))
    bad.write_bytes(DEFAULT_CNN_PATH.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="sha256"):
        load_cnn_ranker(bad)
    assert load_cnn_ranker(tmp_path / "absent.onnx") is None


def _dot_and_vessel(um: float = 4.25, size: int = 400, seed: int = 0):
    """A fundus-like patch at IDRiD's scale: a 50 µm dark dot and a 90 µm-wide vessel."""
    import cv2

    from appliance.imaging.fov import FieldOfView

    rng = np.random.default_rng(seed)
    g = np.full((size, size), 110.0, np.float32) + rng.normal(0, 1.5, (size, size)).astype(np.float32)
    g = cv2.GaussianBlur(g, (0, 0), 1.0)
    yy, xx = np.mgrid[:size, :size]
    dot = (270.0, 270.0)
    g -= 25.0 * np.exp(-((xx - dot[0]) ** 2 + (yy - dot[1]) ** 2) / (2 * (25.0 / um / 2) ** 2))
    cv2.line(g, (0, 110), (size - 1, 150), 70.0, int(round(90.0 / um)))
    g = cv2.GaussianBlur(g, (0, 0), 1.5)
    g8 = np.clip(g, 0, 255).astype(np.uint8)
    rgb = np.dstack([np.clip(g8 * 1.6, 0, 255).astype(np.uint8), g8, (g8 * 0.3).astype(np.uint8)])
    fov = FieldOfView(np.ones((size, size), bool), (size / 2, size / 2), size, size)
    vessel = (200.0, 110.0 + 40.0 * 200.0 / (size - 1))
    return rgb, fov, dot, vessel, um


def test_cnn_ranker_scores_a_dark_dot_above_a_vessel_segment():
    from appliance.glance.candidates import cnn_patches
    from appliance.glance.saliency import compute_saliency

    cnn = _cnn_or_skip()
    rgb, fov, dot, vessel, um = _dot_and_vessel()
    smap = compute_saliency(rgb, fov.mask, um)
    p = cnn.probability(cnn_patches(rgb, smap, np.array([dot, vessel])))
    assert p[0] > p[1]
    assert p[0] > 0.5 > p[1]


def test_cnn_scores_in_a_window_equal_the_whole_image():
    from appliance.glance.dkf import base_score

    _cnn_or_skip()
    rgb, fov, dot, _, um = _dot_and_vessel()
    whole = {(round(c.x, 2), round(c.y, 2)): c for c in detect(rgb, fov, um)}
    part = detect(rgb, fov, um, window=(200, 200, 340, 340))
    assert part and all("cnn_prob" in c.features for c in part)
    for c in part:
        w = whole[(round(c.x, 2), round(c.y, 2))]
        assert c.features["cnn_prob"] == pytest.approx(w.features["cnn_prob"], abs=1e-5)
        assert base_score(c) == pytest.approx(base_score(w), abs=1e-6)


def test_an_explicit_ranker_scores_alone_without_the_cnn(real_crop):
    """fit_ranker's cross-validation passes the ranker it is fitting: that ranker must decide,
    not the shipped CNN blend that candidates with CNN patches would otherwise get."""
    import copy

    _cnn_or_skip()
    rgb, fov, _ = real_crop
    cands = detect(rgb, fov, 10.0)
    assert cands and all(c.patch_cnn is not None for c in cands)
    ranker = load_ranker()
    explicit = score_candidates(cands, fov.mask, 10.0, ranker=ranker)
    bare = copy.deepcopy(cands)
    for c in bare:
        c.patch_cnn = None
        c.features.pop("cnn_prob", None)
        c.features.pop("base_score", None)
    feature_only = score_candidates(bare, fov.mask, 10.0)
    with_cnn = score_candidates(cands, fov.mask, 10.0)
    assert [round(s.score, 9) for s in explicit] == [round(s.score, 9) for s in feature_only]
    assert [round(s.score, 9) for s in explicit] != [round(s.score, 9) for s in with_cnn]


def test_batched_base_scores_equal_one_at_a_time(real_crop):
    """The engine primes a cell's base scores in one ranker call; each must be the score
    :func:`base_score` gives the candidate alone."""
    import copy

    from appliance.glance.dkf import base_score, prime_base_scores

    rgb, fov, _ = real_crop
    cands = detect(rgb, fov, 10.0)
    assert len(cands) > 3
    alone = [base_score(c) for c in copy.deepcopy(cands)]
    prime_base_scores(cands)
    assert [c.features["base_score"] for c in cands] == pytest.approx(alone, abs=1e-9)
