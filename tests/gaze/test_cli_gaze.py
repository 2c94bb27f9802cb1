"""``glanceseg simulate-gaze`` on a small synthetic photograph."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.config import Config, load_config
from appliance.errors import ImageError
from appliance.gaze import cli_gaze
from appliance.gaze.csv_replay import read_gaze_csv

W, H = 640, 480
DOTS = [(250, 200), (400, 260), (320, 330)]


@pytest.fixture
def photo(tmp_path: Path) -> tuple[Path, Path]:
    """A fundus-like picture: black margin, orange disc, dark dots; and its MA mask."""
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    cv2.circle(rgb, (W // 2, H // 2), 220, (200, 90, 40), -1)
    mask = np.zeros((H, W), dtype=np.uint8)
    for x, y in DOTS:
        cv2.circle(rgb, (x, y), 4, (90, 30, 20), -1)
        cv2.circle(mask, (x, y), 5, 255, -1)
    image_path, mask_path = tmp_path / "eye.png", tmp_path / "eye_MA.png"
    cv2.imwrite(str(image_path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(mask_path), mask)
    return image_path, mask_path


def run(argv: list[str], config: Config) -> int:
    parser = argparse.ArgumentParser(prog="glanceseg")
    cli_gaze.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args, config)


def test_simulate_gaze_writes_contract_csv_and_truth(photo: tuple[Path, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    image, mask = photo
    config = load_config(environ={})
    out, truth = tmp_path / "gaze.csv", tmp_path / "truth.json"
    assert run(["simulate-gaze", str(image), "--mask", str(mask), "--seed", "4", "--out", str(out),
                "--truth-out", str(truth)], config) == 0
    header = out.read_text().splitlines()[0]
    assert header == "timestamp_ns,x,y,worn,px_per_deg"
    samples = read_gaze_csv(out)
    assert len(samples) > 100 and all(s.px_per_deg > 0 for s in samples)
    data = json.loads(truth.read_text())
    assert len(data["mas"]) == len(DOTS)
    assert set(data["dwelt"]) <= {m["index"] for m in data["mas"]}
    assert "samples" in capsys.readouterr().out
    # Same seed, same file.
    again = tmp_path / "again.csv"
    run(["simulate-gaze", str(image), "--mask", str(mask), "--seed", "4", "--out", str(again)], config)
    assert again.read_bytes() == out.read_bytes()
    other = tmp_path / "other.csv"
    run(["simulate-gaze", str(image), "--seed", "5", "--out", str(other)], config)
    assert other.read_bytes() != out.read_bytes()


def test_scan_stays_in_the_fov(photo: tuple[Path, Path], tmp_path: Path) -> None:
    image, _ = photo
    truth = tmp_path / "t.json"
    run(["simulate-gaze", str(image), "--out", str(tmp_path / "g.csv"), "--truth-out", str(truth),
         "--tracker-error-deg", "0.5", "--offset-deg", "0.2", "0"], load_config(environ={}))
    data = json.loads(truth.read_text())
    assert data["params"]["tracker_error_deg"] == 0.5
    for f in data["fixations"]:
        assert (f["x"] - W / 2) ** 2 + (f["y"] - H / 2) ** 2 <= (220 + 60) ** 2


def test_mask_of_wrong_size_is_refused(photo: tuple[Path, Path], tmp_path: Path) -> None:
    image, _ = photo
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ImageError, match="mask"):
        run(["simulate-gaze", str(image), "--mask", str(small), "--out", str(tmp_path / "g.csv")],
            load_config(environ={}))
