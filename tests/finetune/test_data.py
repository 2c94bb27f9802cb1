"""Fine-tuning reads the appliance's own annotations export (no torch needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from appliance.finetune.data import ADDED, CANDIDATE, from_export
from appliance.glance.lesions import Lesion, SegmentationResult
from appliance.store import annotations
from appliance.store.store import Store


def add_study(store: Store) -> int:
    """One 600x420 study with three model lesions (ids 1-3) of radius 5."""
    yy, xx = np.mgrid[-5:6, -5:6]
    disc = xx ** 2 + yy ** 2 <= 25
    lesions = [Lesion(i, float(x), float(y), int(disc.sum()), (x - 5, y - 5, x + 6, y + 6), s, "model", disc, {})
               for i, x, y, s in ((1, 100, 100, 0.9), (2, 300, 200, 0.7), (3, 500, 300, 0.2))]
    sha = hashlib.sha256((Path(store.config.model.dir) / "manifest.json").read_bytes()).hexdigest()
    rgb = np.random.default_rng(0).integers(0, 255, (420, 600, 3), dtype=np.uint8)
    photo = SimpleNamespace(rgb=rgb, source="t.png", sha256="0" * 64, fov_deg=45.0, dicom={})
    return store.add_study(photo, "P1", "L", SegmentationResult(600, 420, "scan", lesions, 0.5, "litemedsam", sha)).auto_result_id


def test_examples_from_an_annotations_export(config, tmp_path: Path) -> None:
    models = tmp_path / "shipped"
    models.mkdir()
    (models / "manifest.json").write_text('{"name": "litemedsam", "version": "1"}')
    with Store(config.replace(model={"dir": models})) as store:
        rid = add_study(store)
        store.decide(rid, 1, "accept", "dr_a")
        store.decide(rid, 2, "reject", "dr_a")
        store.add_lesion(rid, 50.0, 60.0, "dr_b", radius_px=4)
        store.sign_off(rid, "No apparent retinopathy", "Routine screening", "dr_b")
        annotations.export(store, tmp_path / "export")
    ex = from_export(tmp_path / "export")
    assert len(ex) == 3 and ex.tiles.shape[1:] == (256, 256, 3)
    assert sorted(ex.labels.tolist()) == [0.0, 1.0, 1.0]
    assert sorted(ex.kinds.tolist()) == sorted([CANDIDATE, CANDIDATE, ADDED])
    for t, box, label in zip(ex.tile_of, ex.boxes, ex.labels):
        x0, y0, x1, y1 = (int(v) for v in box)
        inside = ex.tile_truth[t, y0:y1, x0:x1].sum()
        assert (inside > 0) == (label > 0)  # an accepted/added lesion's mask is its target
    assert np.all(ex.boxes[:, 2] > ex.boxes[:, 0])
