"""Fine-tuning figures that need no torch: ROC AUC, CPM wiring, loss-curve PNG, prompt boxes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.finetune.candidate_set import candidate_box
from appliance.finetune.metrics import cpm, plot_losses, roc_auc


def test_roc_auc_matches_definition() -> None:
    rng = np.random.default_rng(1)
    s, y = rng.normal(size=60), rng.integers(0, 2, 60)
    pairs = [(a > b) + 0.5 * (a == b) for a in s[y == 1] for b in s[y == 0]]
    assert roc_auc(s, y) == pytest.approx(np.mean(pairs))
    assert roc_auc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert np.isnan(roc_auc(np.array([1.0]), np.array([1])))


def test_cpm_ranks_by_score() -> None:
    truth = [(np.array([[10.0, 10.0], [50.0, 50.0]]), np.array([3.0, 3.0]))]
    xy = np.array([[10.0, 10.0], [90.0, 90.0], [50.0, 51.0]])
    image_of = np.zeros(3, int)
    good = cpm(np.array([0.9, 0.1, 0.8]), xy, image_of, truth)["cpm"]
    bad = cpm(np.array([0.1, 0.9, 0.2]), xy, image_of, truth)["cpm"]
    assert good > bad


def test_loss_curve_png(tmp_path: Path) -> None:
    hist = [{"epoch": e, "train_total": 1.0 / e, "val_loss": 1.2 / e} for e in range(1, 6)]
    plot_losses(hist, tmp_path / "c.png")
    img = cv2.imread(str(tmp_path / "c.png"))
    assert img is not None and img.shape == (420, 720, 3) and (img < 250).any()


def test_candidate_box_is_clamped() -> None:
    assert candidate_box(100, 100, 1.0) == [94.0, 94.0, 106.0, 106.0]
    assert candidate_box(100, 100, 50.0) == [76.0, 76.0, 124.0, 124.0]
