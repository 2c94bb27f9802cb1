"""``glanceseg eval`` on a small data set laid out like idrid-ma, and the runner's scoring."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.cli import main
from appliance.eval.dataset import load_dataset
from appliance.eval.froc import ground_truth_from_mask
from appliance.eval.runner import evaluate
from appliance.glance.lesions import Lesion, SegmentationResult


@pytest.fixture(scope="module")
def small_dataset(idrid_dir, tmp_path_factory) -> Path:
    """Two 600x600 crops of IDRiD_03 (many MAs) with their masks, indexed like idrid-ma."""
    root = tmp_path_factory.mktemp("ds")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    image = cv2.imread(str(idrid_dir / "images" / "IDRiD_03.jpg"))
    mask = cv2.imread(str(idrid_dir / "masks" / "IDRiD_03_MA.png"), cv2.IMREAD_GRAYSCALE)
    rows = []
    for k, (y, x) in enumerate([(1000, 1250), (1300, 1900)]):
        name = f"CROP_{k}"
        cv2.imwrite(str(root / "images" / f"{name}.png"), image[y:y + 600, x:x + 600])
        cv2.imwrite(str(root / "masks" / f"{name}_MA.png"), mask[y:y + 600, x:x + 600])
        rows.append({"id": name, "image": f"images/{name}.png", "mask": f"masks/{name}_MA.png",
                     "width": 600, "height": 600})
    with open(root / "index.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_eval_writes_report_table_and_curve(small_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "report"
    assert main(["eval", str(small_dataset), "--variants", "saliency", "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "report.json").read_text())
    (variant,) = doc["variants"]
    n_truth = sum(len(ground_truth_from_mask(i.load_mask())) for i in load_dataset(small_dataset))
    assert variant["n_truth"] == n_truth > 0
    assert 0.0 <= variant["cpm"] <= 1.0 and 0.0 <= variant["pixel_aupr"] <= 1.0
    assert len((out / "per_image.csv").read_text().strip().splitlines()) == 3
    assert (out / "froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_perfect_lesions_score_cpm_one_and_shifted_ones_zero(small_dataset: Path) -> None:
    items = load_dataset(small_dataset)

    def at_truth(shift: float):
        def segment(item):
            truth = ground_truth_from_mask(item.load_mask())
            lesions = [Lesion(i, float(x) + shift, float(y), 10, (int(x) - 2, int(y) - 2, int(x) + 3, int(y) + 3),
                              0.9, "saliency", mask=np.ones((5, 5), bool))
                       for i, (x, y) in enumerate(truth.centers_xy)]
            return SegmentationResult(600, 600, "scan", lesions, 0.5, "test", "")
        return segment

    perfect, shifted = evaluate(items, {"perfect": at_truth(0.0), "shifted": at_truth(60.0)}, progress=False)
    assert perfect.froc.cpm == pytest.approx(1.0)
    assert shifted.froc.cpm == pytest.approx(0.0)


def test_reader_overrides_change_the_simulated_reader(config) -> None:
    from appliance.eval.cli_eval import reader_params

    default = reader_params([], config)
    assert default.display == config.display and default.tracker_error_deg == 1.5
    other = reader_params(["tracker_error_deg=1.8", "offset_deg=0.5,-0.3", "dwell_fixations=1"], config)
    assert (other.tracker_error_deg, other.offset_deg, other.dwell_fixations) == (1.8, (0.5, -0.3), 1)
    for bad in ["tracker_error_deg", "no_such_field=1", "offset_deg=1", "notice_prob=high", "display=x"]:
        with pytest.raises(SystemExit):
            reader_params([bad], config)


def test_gaze_eval_reports_dwelt_sensitivity_with_and_without_the_gaze(small_dataset: Path, tmp_path: Path,
                                                                       monkeypatch) -> None:
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "gaze"
    assert main(["eval", str(small_dataset), "--gaze", "simulated", "--variants", "saliency", "--out", str(out),
                 "--reader", "notice_prob=1.0", "--no-progress"]) == 0
    figures = json.loads((out / "gaze_report.json").read_text())["saliency"]
    assert 0 < figures["n_dwelt"] <= figures["n_truth"]
    for rate in ("0.5", "1", "2"):
        assert 0.0 <= figures[f"dwelt_sensitivity_at_{rate}_fppi"] <= 1.0
        assert 0.0 <= figures[f"dwelt_sensitivity_at_{rate}_fppi_detector_only"] <= 1.0
    assert figures["latency_first_ms_p50"] is not None


def test_a_mask_of_another_size_is_a_clear_error(small_dataset: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A data set we never saw may pair a photograph with a mask of another size: eval says so
    (exit 2) instead of an IndexError from the pixel curve."""
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(small_dataset, root)
    mask_path = root / "masks" / "CROP_0_MA.png"
    cv2.imwrite(str(mask_path), cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)[:300, :300])
    monkeypatch.setenv("GLANCESEG_DATA_DIR", str(tmp_path / "data"))
    assert main(["eval", str(root), "--variants", "saliency", "--out", str(tmp_path / "report"),
                 "--no-progress"]) == 2
    assert "300x300" in capsys.readouterr().err


def test_an_index_saved_by_a_spreadsheet_loads(small_dataset: Path, tmp_path: Path) -> None:
    """index.csv with a byte-order mark and CRLF line ends (a spreadsheet's CSV) reads like idrid-ma's."""
    text = (small_dataset / "index.csv").read_text()
    root = tmp_path / "ds"
    root.mkdir()
    (root / "index.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\r\n", "\n").replace("\n", "\r\n").encode())
    assert [i.id for i in load_dataset(root)] == [i.id for i in load_dataset(small_dataset)]
