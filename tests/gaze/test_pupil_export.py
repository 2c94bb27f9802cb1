"""Replay of a Neon / Pupil Cloud export through a screen mapping and the viewer transform."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import GazeError
from appliance.gaze.fixations import detect_fixations
from appliance.gaze.geometry import ViewTransform
from appliance.gaze.pupil_export import (
    PupilExportSource,
    ScreenMapping,
    ViewTimeline,
    load_screen_mapping,
    read_pupil_fixations,
    read_pupil_gaze,
)

SPD = 50.0
# Scene camera px -> screen px: the screen appears at half size, offset by (100, 50).
H = [[2.0, 0.0, -200.0], [0.0, 2.0, -100.0], [0.0, 0.0, 1.0]]
VIEW = ViewTransform(2000, 1000, 1000, 500)  # image shown at half size, fills the screen

GAZE_HEADER = ["section id", "recording id", "timestamp [ns]", "gaze x [px]", "gaze y [px]", "worn",
               "fixation id", "blink id", "azimuth [deg]", "elevation [deg]"]
FIX_HEADER = ["section id", "recording id", "fixation id", "start timestamp [ns]", "end timestamp [ns]",
              "duration [ms]", "fixation x [px]", "fixation y [px]", "azimuth [deg]", "elevation [deg]"]


def write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def gaze_row(t: int, x: object, y: object, worn: str = "1.0", blink: str = "") -> list[object]:
    return ["s1", "r1", t, x, y, worn, "", blink, 0.0, 0.0]


def test_gaze_csv_is_mapped_to_image_px(tmp_path: Path) -> None:
    path = write(tmp_path / "gaze.csv", GAZE_HEADER, [
        gaze_row(1000, 350.0, 175.0),               # screen (500, 250) -> image (1000, 500)
        gaze_row(2000, 350.0, 175.0, worn="0.0"),   # not worn
        gaze_row(3000, 350.0, 175.0, blink="4"),    # in a blink
        gaze_row(4000, 50.0, 175.0),                # screen x = -100: off screen
        gaze_row(5000, "", ""),                     # no gaze
        ["s1", "r1", "garbage", 1, 1, "1.0", "", "", 0, 0],  # skipped
    ])
    got = read_pupil_gaze(path, ScreenMapping.fixed(H), ViewTimeline.fixed(VIEW), SPD)
    assert [s.timestamp_ns for s in got] == [1000, 2000, 3000, 4000, 5000]
    assert (got[0].x, got[0].y) == pytest.approx((1000.0, 500.0))
    assert got[0].px_per_deg == pytest.approx(100.0)
    assert not got[1].worn
    assert all(math.isnan(s.x) for s in got[2:])


def test_recorded_mapping_and_view_timeline(tmp_path: Path) -> None:
    mapping = ScreenMapping.recorded([(2000, H), (500, None)])
    assert mapping.at(100) is None and mapping.at(1000) is None
    assert np.allclose(mapping.at(2500), H)
    zoomed = VIEW.with_zoom(2.0)
    views = ViewTimeline(((0, VIEW), (3000, zoomed)))
    path = write(tmp_path / "gaze.csv", GAZE_HEADER, [
        gaze_row(1000, 350.0, 175.0), gaze_row(2500, 350.0, 175.0), gaze_row(3500, 350.0, 175.0)])
    got = read_pupil_gaze(path, mapping, views, SPD)
    assert math.isnan(got[0].x)  # screen not found yet
    assert got[1].px_per_deg == pytest.approx(100.0)
    assert got[2].px_per_deg == pytest.approx(50.0)  # zoomed in: finer
    assert (got[2].x, got[2].y) == pytest.approx((1000.0, 500.0))  # centre stays the centre


def test_fixations_csv_replays_as_samples(tmp_path: Path) -> None:
    path = write(tmp_path / "fixations.csv", FIX_HEADER, [
        ["s1", "r1", 1, 0, 300_000_000, 300.0, 350.0, 175.0, 0, 0],
        ["s1", "r1", 2, 350_000_000, 600_000_000, 250.0, 400.0, 200.0, 0, 0],
    ])
    samples = read_pupil_fixations(path, ScreenMapping.fixed(H), ViewTimeline.fixed(VIEW), SPD)
    fixes, _ = detect_fixations(samples, image_size=(2000, 1000))
    assert len(fixes) == 2
    assert (fixes[0].x, fixes[0].y) == pytest.approx((1000.0, 500.0))
    assert (fixes[1].x, fixes[1].y) == pytest.approx((1200.0, 600.0))
    assert fixes[0].duration_ms == pytest.approx(300.0)


def test_mapping_files(tmp_path: Path) -> None:
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({"homography": H}))
    assert np.allclose(load_screen_mapping(fixed).at(0), H)
    rec = tmp_path / "rec.json"
    rec.write_text(json.dumps({"homographies": [{"timestamp_ns": 5, "homography": H},
                                                 {"timestamp_ns": 9, "homography": None}]}))
    m = load_screen_mapping(rec)
    assert m.at(4) is None and m.at(6) is not None and m.at(9) is None
    for bad in ({"homography": [[1, 2], [3, 4]]}, {"other": 1}, {"homographies": [{"h": 1}]}):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(GazeError):
            load_screen_mapping(path)
    with pytest.raises(GazeError):
        load_screen_mapping(tmp_path / "absent.json")


def test_source_prefers_gaze_csv(tmp_path: Path) -> None:
    write(tmp_path / "gaze.csv", GAZE_HEADER, [gaze_row(1000, 350.0, 175.0)])
    write(tmp_path / "fixations.csv", FIX_HEADER, [["s1", "r1", 1, 0, 300_000_000, 300.0, 350.0, 175.0, 0, 0]])
    src = PupilExportSource(tmp_path, ScreenMapping.fixed(H), VIEW, SPD)
    assert len(src) == 1 and src.kind == "pupil_export"
    (tmp_path / "gaze.csv").unlink()
    assert len(PupilExportSource(tmp_path, ScreenMapping.fixed(H), VIEW, SPD)) > 1
    (tmp_path / "fixations.csv").unlink()
    with pytest.raises(GazeError):
        PupilExportSource(tmp_path, ScreenMapping.fixed(H), VIEW, SPD)


def test_missing_columns_raise(tmp_path: Path) -> None:
    path = write(tmp_path / "gaze.csv", ["timestamp [ns]", "x"], [[1, 2]])
    with pytest.raises(GazeError, match="gaze x"):
        read_pupil_gaze(path, ScreenMapping.fixed(H), ViewTimeline.fixed(VIEW), SPD)


def test_a_live_mapper_with_map_serves_as_mapping(tmp_path: Path) -> None:
    class Mapper:  # the shape of screen_mapping.ScreenMapper: map(t, x, y) -> (x, y) | None
        def map(self, t: int, x: float, y: float):
            return None if t < 2000 else (500.0, 250.0)

    path = write(tmp_path / "gaze.csv", GAZE_HEADER, [gaze_row(1000, 1.0, 1.0), gaze_row(3000, 1.0, 1.0)])
    got = read_pupil_gaze(path, Mapper(), ViewTimeline.fixed(VIEW), SPD)
    assert math.isnan(got[0].x) and (got[1].x, got[1].y) == pytest.approx((1000.0, 500.0))


def test_worn_as_every_pupil_labs_exporter_writes_it(tmp_path: Path) -> None:
    # Cloud / Neon Player 5: 1.0 / 0.0; pl-rec-export: True / False; pl-neon-recording: 255 / 0.
    cells = ["1.0", "0.0", "True", "False", "false", "255", "0", ""]
    path = write(tmp_path / "gaze.csv", GAZE_HEADER,
                 [gaze_row(1000 * (i + 1), 350.0, 175.0, worn=c) for i, c in enumerate(cells)])
    got = read_pupil_gaze(path, ScreenMapping.fixed(H), ViewTimeline.fixed(VIEW), SPD)
    assert [s.worn for s in got] == [True, False, True, False, False, True, False, True]


def test_blinks_csv_blanks_gaze_when_blink_ids_are_missing(tmp_path: Path) -> None:
    # Neon Player 5 and pl-rec-export can leave "blink id" empty and keep blinks in blinks.csv.
    path = write(tmp_path / "gaze.csv", GAZE_HEADER, [gaze_row(t, 350.0, 175.0) for t in (1000, 1010, 1015, 1020)])
    write(tmp_path / "blinks.csv", ["section id", "recording id", "blink id", "start timestamp [ns]",
                                    "end timestamp [ns]", "duration [ms]"], [["s1", "r1", 1, 1010, 1020, 0.00001]])
    got = read_pupil_gaze(path, ScreenMapping.fixed(H), ViewTimeline.fixed(VIEW), SPD)
    assert [math.isnan(s.x) for s in got] == [False, True, True, False]  # [start, end)


@pytest.mark.parametrize("stamp", ["1.636035190021016e+18", "1636035190021016000.0", "1.63604E+18"])
def test_timestamps_a_spreadsheet_turned_to_floats_are_refused(tmp_path: Path, stamp: str) -> None:
    path = write(tmp_path / "gaze.csv", GAZE_HEADER, [gaze_row(stamp, 350.0, 175.0)] * 3)  # type: ignore[arg-type]
    with pytest.raises(GazeError, match="integer timestamp in ns"):
        read_pupil_gaze(path, ScreenMapping.fixed(H), ViewTimeline.fixed(VIEW), SPD)


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_a_file_that_is_not_utf8_is_a_gaze_error(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "gaze.csv"
    path.write_text(",".join(GAZE_HEADER) + "\n" + "s1,r1,1000,350,175,1.0,,,0,0,Müller\n", encoding=encoding)
    with pytest.raises(GazeError, match="UTF-8"):
        read_pupil_gaze(path, ScreenMapping.fixed(H), ViewTimeline.fixed(VIEW), SPD)


def test_fixations_closer_than_a_sample_stay_in_order_and_whole(tmp_path: Path) -> None:
    path = write(tmp_path / "fixations.csv", FIX_HEADER, [
        ["s1", "r1", 1, 0, 302_000_000, 302.0, 350.0, 175.0, 0, 0],
        ["s1", "r1", 2, 305_000_000, 600_000_000, 295.0, 400.0, 200.0, 0, 0],  # 3 ms later
    ])
    samples = read_pupil_fixations(path, ScreenMapping.fixed(H), ViewTimeline.fixed(VIEW), SPD)
    times = [s.timestamp_ns for s in samples]
    assert times == sorted(times)
    fixes, counters = detect_fixations(samples, image_size=(2000, 1000))
    assert counters["backwards"] == 0
    assert [round(f.duration_ms) for f in fixes] == [302, 295]


def test_a_neon_player_4_export_is_named(tmp_path: Path) -> None:
    write(tmp_path / "gaze_positions.csv", ["timestamp [s]", "gaze x [px]", "gaze y [px]"], [[1.0, 2, 3]])
    write(tmp_path / "fixations.csv", ["id", "start_timestamp", "duration"], [[1, 1.0, 300]])
    with pytest.raises(GazeError, match="Neon Player 4"):
        PupilExportSource(tmp_path, ScreenMapping.fixed(H), VIEW, SPD)
