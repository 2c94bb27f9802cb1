"""Fine-tuning reads the appliance's own annotations export (no torch needed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from appliance.finetune.data import ADDED, CANDIDATE, example_group, from_export, read_export, split_groups
from appliance.glance.lesions import Lesion, SegmentationResult
from appliance.store import annotations
from appliance.store.store import Store


def add_study(store: Store, patient: str = "P1", eye: str = "L", seed: int = 0) -> int:
    """One 600x420 study with three model lesions (ids 1-3) of radius 5."""
    yy, xx = np.mgrid[-5:6, -5:6]
    disc = xx ** 2 + yy ** 2 <= 25
    lesions = [Lesion(i, float(x), float(y), int(disc.sum()), (x - 5, y - 5, x + 6, y + 6), s, "model", disc, {})
               for i, x, y, s in ((1, 100, 100, 0.9), (2, 300, 200, 0.7), (3, 500, 300, 0.2))]
    sha = hashlib.sha256((Path(store.config.model.dir) / "manifest.json").read_bytes()).hexdigest()
    rgb = np.random.default_rng(seed).integers(0, 255, (420, 600, 3), dtype=np.uint8)
    photo = SimpleNamespace(rgb=rgb, source=f"t{seed}.png", sha256=f"{seed:064d}", fov_deg=45.0, dicom={})
    return store.add_study(photo, patient, eye, SegmentationResult(600, 420, "scan", lesions, 0.5, "litemedsam", sha)).auto_result_id


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


def export_of_patients(config, tmp_path: Path, patients: tuple[tuple[str, str], ...] = (
        ("PAT-A", "L"), ("PAT-A", "R"), ("PAT-B", "L"), ("PAT-C", "R"))) -> Path:
    """An export of signed reviews, one study per (patient, eye): 1 accepted, 2 rejected, 1 added each."""
    models = tmp_path / "shipped"
    models.mkdir(exist_ok=True)
    (models / "manifest.json").write_text('{"name": "litemedsam", "version": "1"}')
    with Store(config.replace(model={"dir": models})) as store:
        for seed, (patient, eye) in enumerate(patients):
            rid = add_study(store, patient, eye, seed)
            store.decide(rid, 1, "accept", "dr_a")
            store.decide(rid, 2, "reject", "dr_a")
            store.decide(rid, 3, "reject", "dr_a")
            store.add_lesion(rid, 50.0, 60.0, "dr_a", radius_px=4)
            store.sign_off(rid, "No apparent retinopathy", "Routine screening", "dr_a")
        annotations.export(store, tmp_path / "export")
    return tmp_path / "export"


def test_export_split_keeps_each_patient_on_one_side(config, tmp_path: Path) -> None:
    """Both eyes of a patient share a group, and a split never puts a group on both sides:
    validating on the other eye of a patient trained on measures memory, not learning."""
    out = export_of_patients(config, tmp_path)
    text = (out / "annotations.jsonl").read_text()
    assert "PAT-" not in text and "PAT-" not in (out / "manifest.json").read_text()  # no identifier leaves
    _, lines = read_export(out)
    by_photo = {ex["image_sha256"]: example_group(ex) for ex in lines}
    assert len(by_photo) == 4 and sorted(set(by_photo.values())) == ["p1", "p2", "p3"]
    for seed in range(5):
        train, val = split_groups([example_group(ex) for ex in lines], 0.34, seed)
        assert train and val and not set(train) & set(val) and sorted(train + val) == ["p1", "p2", "p3"]
        tr, va = from_export(out, set(train)), from_export(out, set(val))
        assert len(tr) + len(va) == len(lines)
        assert not set(tr.image_ids) & set(va.image_ids)  # no photograph on both sides either
    with pytest.raises(ValueError, match="at least two"):
        split_groups(["p1", "p1"], 0.2)


def test_a_corrupt_export_is_refused(config, tmp_path: Path) -> None:
    """A damaged copy stops the build with what is wrong instead of training on part of it."""
    out = export_of_patients(config, tmp_path, (("PAT-A", "L"), ("PAT-B", "L")))
    lines = (out / "annotations.jsonl").read_text().splitlines()
    (out / "annotations.jsonl").write_text("\n".join(lines[:3] + [lines[3][:40]]) + "\n")
    with pytest.raises(ValueError, match="line 4 is not JSON"):
        from_export(out)
    (out / "annotations.jsonl").write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(ValueError, match="incomplete"):
        from_export(out)
    (out / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    (out / json.loads(lines[0])["tile"]).write_bytes(b"not a png")
    with pytest.raises(ValueError, match="missing or damaged"):
        from_export(out)
    (out / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="format"):
        from_export(out)


def test_cli_train_reads_an_annotations_export() -> None:
    """`finetune train --annotations DIR` is how clinicians' decisions reach training; it
    takes either that or a candidate set, never both."""
    import argparse

    from appliance.finetune import cli_finetune

    parser = argparse.ArgumentParser()
    cli_finetune.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["finetune", "train", "--annotations", "/x", "--out", "/y", "--val-fraction", "0.3"])
    assert args.annotations == Path("/x") and args.val_fraction == 0.3 and args.set is None
    both = parser.parse_args(["finetune", "train", "--annotations", "/x", "--set", "s", "--data", "d", "--out", "/y"])
    with pytest.raises(SystemExit, match="either --annotations"):
        cli_finetune.run_train(both, None)


def test_cli_train_refuses_a_photograph_in_two_splits(tmp_path: Path) -> None:
    """--train-ids and --val-ids/--test-ids that overlap are refused before any work: the
    before/after figures would be measured on photographs trained on."""
    import argparse

    from appliance.finetune import cli_finetune

    parser = argparse.ArgumentParser()
    cli_finetune.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["finetune", "train", "--set", "s.json", "--data", "d", "--out", str(tmp_path / "run"),
                              "--train-ids", "IDRiD_01,IDRiD_02", "--val-ids", "IDRiD_02",
                              "--test-ids", "IDRiD_13"])
    with pytest.raises(SystemExit, match="IDRiD_02 is in both the train and the val split"):
        cli_finetune.run_train(args, None)
    assert not (tmp_path / "run").exists()
