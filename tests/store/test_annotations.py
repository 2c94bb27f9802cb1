"""Annotations: decisions -> training examples (real SQLite store), undo, retention, export layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from appliance.errors import StoreError
from appliance.glance.lesions import Lesion, SegmentationResult
from appliance.store import annotations
from appliance.store.store import Store

W, H = 600, 420


def disc(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return xx ** 2 + yy ** 2 <= r * r


def lesion(i: int, x: int, y: int, score: float, r: int = 5, **features: float) -> Lesion:
    m = disc(r)
    return Lesion(id=i, x=float(x), y=float(y), area_px=int(m.sum()), bbox=(x - r, y - r, x + r + 1, y + r + 1),
                  score=score, source="model", mask=m, features={"saliency": 0.5, **features})


@pytest.fixture()
def store(config, tmp_path: Path) -> Store:
    models = tmp_path / "shipped"
    models.mkdir()
    (models / "manifest.json").write_text(json.dumps({"name": "litemedsam", "version": "1"}))
    config = config.replace(model={"dir": models})
    with Store(config) as s:
        yield s


def add_study(store: Store) -> tuple[int, str]:
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    lesions = [lesion(1, 100, 100, 0.9), lesion(2, 300, 200, 0.7, box_x0=290, box_y0=190, box_x1=311, box_y1=211),
               lesion(3, 590, 410, 0.2)]
    manifest_sha = hashlib.sha256((Path(store.config.model.dir) / "manifest.json").read_bytes()).hexdigest()
    result = SegmentationResult(W, H, "scan", lesions, 0.5, "litemedsam", manifest_sha)
    photo = SimpleNamespace(rgb=rgb, source="t.png", sha256="0" * 64, fov_deg=45.0, dicom={})
    study = store.add_study(photo, "P1", "L", result)
    return study.auto_result_id, manifest_sha


def sign(store: Store, rid: int, actor: str = "dr_a") -> None:
    """Sign the review off, as the results page does: only signed decisions are annotations."""
    store.sign_off(rid, "No apparent retinopathy", "Routine screening", actor)


def test_decisions_become_examples(store: Store) -> None:
    rid, manifest_sha = add_study(store)
    store.decide(rid, 1, "accept", "dr_a")
    store.decide(rid, 2, "reject", "dr_a")
    store.decide(rid, 3, "accept", "dr_b")
    store.add_lesion(rid, 50.0, 60.0, "dr_b", radius_px=4)
    sign(store, rid)
    assert annotations.refresh(store) == 1
    assert annotations.refresh(store) == 0  # nothing new
    got = {a.lesion_id: a for a in annotations.list_annotations(store)}
    assert sorted((a.decision, a.actor) for a in got.values()) == [
        ("accepted", "dr_a"), ("accepted", "dr_b"), ("added", "dr_b"), ("rejected", "dr_a")]
    a2 = got[2]
    assert a2.box == (290, 190, 311, 211) and a2.label == 0  # the recorded prompt box wins
    assert got[1].box == (91, 91, 110, 110)  # else the mask bbox + 4 px
    assert got[1].model_sha256 == manifest_sha and got[1].model_version == "shipped-1"
    assert got[3].tile[2] + got[3].tile[4] > W  # edge tile: reaches past the image
    added = [a for a in got.values() if a.decision == "added"][0]
    assert added.score is None and added.source == "clinician" and added.mask.sum() > 0
    assert store.path(got[1].tile_path).is_file()


def test_undo_and_change_of_mind(store: Store) -> None:
    rid, _ = add_study(store)
    store.decide(rid, 1, "accept", "dr_a")
    store.decide(rid, 2, "accept", "dr_a")
    sign(store, rid)
    annotations.refresh(store)
    store.undo(rid, "dr_a")  # undoes the accept of 2
    store.decide(rid, 1, "reject", "dr_b")  # changes her mind on 1
    sign(store, rid, "dr_b")
    annotations.refresh(store)
    got = annotations.list_annotations(store)
    assert [(a.lesion_id, a.decision, a.actor) for a in got] == [(1, "rejected", "dr_b")]


def test_export_layout(store: Store, tmp_path: Path) -> None:
    rid, _ = add_study(store)
    store.decide(rid, 1, "accept", "dr_a")
    store.decide(rid, 2, "reject", "dr_a")
    store.add_lesion(rid, 50.0, 60.0, "dr_b", radius_px=4)
    sign(store, rid)
    out = tmp_path / "export"
    manifest = annotations.export(store, out)
    assert manifest["counts"] == {"accepted": 1, "rejected": 1, "added": 1, "skipped_no_tile": 0}
    lines = [json.loads(l) for l in (out / "annotations.jsonl").read_text().splitlines()]
    assert [l["label"] for l in lines] == [1, 0, 1]
    for line in lines:
        assert set(line) == set(annotations.EXAMPLE_KEYS)
        tile = cv2.imread(str(out / line["tile"]))
        mask = cv2.imread(str(out / line["mask"]), cv2.IMREAD_GRAYSCALE)
        assert tile.shape == (256, 256, 3) and mask.shape == (256, 256)
        cx, cy = (int(round(v)) for v in line["center_tile"])
        assert mask[cy, cx] == 255  # the mask sits where the example says, in tile px
        x0, y0, x1, y1 = line["box_tile"]
        assert mask[:, :x0].sum() == 0 and mask[:y0].sum() == 0  # inside its prompt box
    first = manifest["dataset_sha256"]
    again = annotations.export(store, tmp_path / "export2")
    assert again["dataset_sha256"] == first  # deterministic
    with pytest.raises(StoreError, match="not empty"):
        annotations.export(store, out)
    assert "P1" not in (out / "annotations.jsonl").read_text()  # no patient identifier


def test_export_is_owner_only(store: Store, tmp_path: Path) -> None:
    """The tiles are crops of patients' retinas: 0600 files in 0700 folders, as in the store,
    whatever the umask (a root export was 0644, readable by every local user)."""
    import os
    import stat

    rid, _ = add_study(store)
    store.decide(rid, 1, "accept", "dr_a")
    sign(store, rid)
    old = os.umask(0o022)
    try:
        annotations.export(store, tmp_path / "export")
    finally:
        os.umask(old)
    paths = [tmp_path / "export", *(tmp_path / "export").rglob("*")]
    assert any(p.suffix == ".png" and p.parent.name == "tiles" for p in paths)
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths}
    assert all(m == ("0o700" if (tmp_path / p).is_dir() else "0o600") for p, m in modes.items()), modes


def test_examples_outlive_the_photograph(store: Store, tmp_path: Path) -> None:
    rid, _ = add_study(store)
    store.decide(rid, 1, "accept", "dr_a")
    sign(store, rid)
    annotations.refresh(store)
    image = store.get_image(store.get_result(rid).image_id)
    store.path(image.path).unlink()  # as retention would
    store.decide(rid, 2, "reject", "dr_a")
    sign(store, rid)
    annotations.refresh(store)  # 2's tile cannot be cut any more; 1's PNG was kept
    manifest = annotations.export(store, tmp_path / "e")
    assert manifest["counts"]["accepted"] == 1
    assert manifest["counts"]["rejected"] + manifest["counts"]["skipped_no_tile"] == 1


def test_cli_export(store: Store, tmp_path: Path, capsys) -> None:
    import argparse

    from appliance.store import cli_annotations

    rid, _ = add_study(store)
    store.decide(rid, 1, "accept", "dr_a")
    sign(store, rid)
    parser = argparse.ArgumentParser()
    cli_annotations.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["annotations", "export", str(tmp_path / "cli")])
    assert args.handler(args, store.config) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["accepted"] == 1


def test_only_signed_off_decisions_are_examples(store: Store, tmp_path: Path) -> None:
    """The export holds what the latest sign-off stated: a review in progress (never signed, or
    an amendment not signed yet) is no annotation, else one tap of a half-read photograph, or a
    colleague's unfinished amendment, would train the model against the signed review."""
    rid, _ = add_study(store)
    store.decide(rid, 1, "accept", "dr_a")
    store.decide(rid, 2, "reject", "dr_a")
    assert annotations.export(store, tmp_path / "none")["count"] == 0  # not signed: nothing
    sign(store, rid)  # a sign-off alone (no new decision) makes them annotations
    first = annotations.export(store, tmp_path / "first")
    assert first["counts"] == {"accepted": 1, "rejected": 1, "added": 0, "skipped_no_tile": 0}
    store.decide(rid, 1, "reject", "dr_b")  # amendment in progress, not signed
    store.add_lesion(rid, 50.0, 60.0, "dr_b", radius_px=4)
    assert annotations.export(store, tmp_path / "pending")["counts"] == first["counts"]
    sign(store, rid, "dr_b")  # the amendment's decisions replace the first sign-off's
    assert annotations.refresh(store) == 1
    got = {a.lesion_id: (a.decision, a.actor) for a in annotations.list_annotations(store)}
    assert sorted(got.values()) == [("added", "dr_b"), ("rejected", "dr_a"), ("rejected", "dr_b")]


def test_rows_built_by_an_earlier_release_are_rebuilt(store: Store) -> None:
    """An appliance updated from a release that turned unsigned decisions into annotations
    rebuilds them once, so its next export is not still the old, unsigned state."""
    rid, _ = add_study(store)
    store.decide(rid, 1, "accept", "dr_a")
    sign(store, rid)
    annotations.refresh(store)
    store.decide(rid, 1, "reject", "dr_b")  # not signed
    top = store.connection.execute("SELECT MAX(seq) FROM decisions").fetchone()[0]
    with store.connection:  # what the earlier release left: its own cursor at the top, the unsigned state
        store.connection.execute("UPDATE annotations SET decision = 'rejected', actor = 'dr_b'")
        store.connection.execute("UPDATE annotation_cursor SET seq = ? WHERE name = 'decisions'", (top,))
        store.connection.execute("DELETE FROM annotation_cursor WHERE name = 'signed'")
    assert annotations.refresh(store) == 1
    assert [(a.decision, a.actor) for a in annotations.list_annotations(store)] == [("accepted", "dr_a")]


def test_a_corrupt_result_file_skips_only_that_study(store: Store, tmp_path: Path) -> None:
    """A damaged result file of one study is logged and skipped; it stopped every export."""
    rid, _ = add_study(store)
    store.decide(rid, 1, "accept", "dr_a")
    sign(store, rid)
    photo = SimpleNamespace(rgb=np.zeros((H, W, 3), np.uint8), source="u.png", sha256="1" * 64, fov_deg=45.0, dicom={})
    other = store.add_study(photo, "P2", "R", store.load_result(rid).result).auto_result_id
    store.decide(other, 2, "reject", "dr_a")
    sign(store, other)
    store.path(store.get_result(rid).masks_path).write_bytes(b"damaged")
    manifest = annotations.export(store, tmp_path / "e")
    assert manifest["counts"]["rejected"] == 1 and manifest["counts"]["accepted"] == 0


def test_example_ids_stay_while_the_decision_stands(store: Store) -> None:
    """A later decision on another lesion of the same photograph leaves the other examples' ids
    (and mask file names) alone, as documented; each rebuild renumbered them."""
    rid, _ = add_study(store)
    photo = SimpleNamespace(rgb=np.zeros((H, W, 3), np.uint8), source="u.png", sha256="1" * 64, fov_deg=45.0, dicom={})
    other = store.add_study(photo, "P2", "R", store.load_result(rid).result).auto_result_id
    store.decide(rid, 1, "accept", "dr_a")
    store.decide(rid, 2, "reject", "dr_a")
    sign(store, rid)
    store.decide(other, 1, "accept", "dr_a")
    sign(store, other)
    annotations.refresh(store)
    before = {(a.result_id, a.lesion_id): a.id for a in annotations.list_annotations(store)}
    store.decide(rid, 3, "accept", "dr_a")  # an amendment touching lesion 3 only
    sign(store, rid)
    annotations.refresh(store)
    after = {(a.result_id, a.lesion_id): a.id for a in annotations.list_annotations(store)}
    assert {k: after[k] for k in before} == before and len(set(after.values())) == 4
