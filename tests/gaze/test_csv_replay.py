"""The gaze CSV contract: reader, writer, replay source."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from appliance.errors import GazeError
from appliance.gaze.base import GazeSample
from appliance.gaze.csv_replay import CsvReplaySource, read_gaze_csv, write_gaze_csv
from appliance.gaze.replay import SampleReplay, replay_offsets_s
from gaze_sample_helpers import same_samples


def samples() -> list[GazeSample]:
    return [
        GazeSample(1_000_000_000, 10.25, 20.5, True, 120.0),
        GazeSample(1_005_000_000, math.nan, math.nan, True, 120.0),  # blink
        GazeSample(1_010_000_000, 11.0, 21.75, False, 120.0),
        GazeSample(1_015_000_000, 12.0, 22.0, True, math.nan),
    ]


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "gaze.csv"
    assert write_gaze_csv(path, samples()) == 4
    lines = path.read_text().splitlines()
    assert lines[0] == "timestamp_ns,x,y,worn,px_per_deg"
    assert lines[2] == "1005000000,,,1,120.0000"
    assert same_samples(read_gaze_csv(path), samples())


def test_minimal_columns_take_defaults(tmp_path: Path) -> None:
    path = tmp_path / "gaze.csv"
    path.write_text("timestamp_ns,x,y\n0,1.5,2.5\n5000000,,\n\n10000000,3,4\n")
    got = read_gaze_csv(path, default_px_per_deg=77.0)
    assert len(got) == 3
    assert got[0] == GazeSample(0, 1.5, 2.5, True, 77.0)
    assert math.isnan(got[1].x) and not got[1].has_gaze
    assert got[2].worn and got[2].px_per_deg == 77.0


def test_empty_px_per_deg_cell_takes_default(tmp_path: Path) -> None:
    path = tmp_path / "gaze.csv"
    path.write_text("timestamp_ns,x,y,worn,px_per_deg\n0,1,2,0,\n5,1,2,1,50\n")
    got = read_gaze_csv(path, default_px_per_deg=77.0)
    assert [s.px_per_deg for s in got] == [77.0, 50.0]
    assert [s.worn for s in got] == [False, True]


@pytest.mark.parametrize("text, message", [
    ("t,x,y\n0,1,2\n", "timestamp_ns"),
    ("timestamp_ns,x,y\n0,abc,2\n5000000,1,2\n", "line 2"),
    ("timestamp_ns,x,y\nnow,1,2\n5000000,1,2\n", "timestamp"),
    ("timestamp_ns,x,y,worn\n0,1,2,maybe\n5000000,1,2,1\n", "worn"),
    ("timestamp_ns,x,y\n0,abc,2\n", "line 2"),  # the only row: nothing to keep
    ("", "is empty"),
    ("time,gx,gy\n0,1,2\n", "found 'time,gx,gy'"),
    # A spreadsheet's export with decimal commas: the separator, or the comma, is named.
    ("timestamp_ns;x;y;worn;px_per_deg\n0;237,83;79,37;1;31,7\n", "separates its columns with semicolons"),
    ("timestamp_ns\tx\ty\n0\t237.8\t79.4\n", "separates its columns with tabs"),
    ('timestamp_ns,x,y\n0,"237,83",79\n5000000,1,2\n', r"line 2: '237,83' is not a number\. Decimals are written "
                                                        r"with a point \(237\.83\)"),
])
def test_malformed_files_raise(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gaze.csv"
    path.write_text(text)
    with pytest.raises(GazeError, match=message):
        read_gaze_csv(path)


def test_a_last_row_cut_short_is_left_out(tmp_path: Path, caplog) -> None:
    # A recorder that lost power mid-write leaves a torn last line; the reading before it is kept.
    path = tmp_path / "gaze.csv"
    path.write_text("timestamp_ns,x,y,worn,px_per_deg\n0,10,20,1,50\n5000000,11,21,1,50\n10000000,12,2.5e")
    got = read_gaze_csv(path)
    assert [(s.timestamp_ns, s.x) for s in got] == [(0, 10.0), (5_000_000, 11.0)]
    assert "line 4" in caplog.text and "cut short" in caplog.text


@pytest.mark.parametrize("unit_ns", [1_000_000_000, 1_000_000, 1_000])  # seconds, ms, µs
def test_timestamps_that_cannot_be_nanoseconds_are_refused(tmp_path: Path, unit_ns: int) -> None:
    # 10 s at 200 Hz written in another unit: read as ns it would be one instant, no fixations.
    rows = [f"{k * 0.005 * 1e9 / unit_ns:.6f},{300 + k % 3},{300}" for k in range(2000)]
    path = tmp_path / "gaze.csv"
    path.write_text("timestamp_ns,x,y\n" + "\n".join(rows) + "\n")
    with pytest.raises(GazeError, match="must be nanoseconds"):
        read_gaze_csv(path)


def test_repeated_timestamps_do_not_look_like_a_wrong_unit(tmp_path: Path) -> None:
    path = tmp_path / "gaze.csv"
    rows = "".join(f"{(i // 2) * 5_000_000},{i},{i}\n" for i in range(60))  # every time logged twice
    path.write_text("timestamp_ns,x,y\n" + rows)
    assert len(read_gaze_csv(path)) == 60


def test_a_gap_or_a_clock_jump_does_not_look_like_a_wrong_unit(tmp_path: Path) -> None:
    times = [k * 5_000_000 for k in range(40)]
    times[20:] = [t - 3_000_000_000 for t in times[20:]]  # clock jumps back 3 s mid-way
    times[30:] = [t + 60_000_000_000 for t in times[30:]]  # then a minute of track loss
    path = tmp_path / "gaze.csv"
    path.write_text("timestamp_ns,x,y\n" + "".join(f"{t},10,10\n" for t in times))
    assert [s.timestamp_ns for s in read_gaze_csv(path)] == times


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(GazeError):
        read_gaze_csv(tmp_path / "absent.csv")


def test_replay_as_fast_as_possible(tmp_path: Path) -> None:
    path = tmp_path / "gaze.csv"
    write_gaze_csv(path, samples())
    with CsvReplaySource(path) as source:
        got = []
        while not source.finished:
            got.append(source.receive(timeout_s=0))
        assert same_samples(got, samples())
        assert source.receive(0) is None
        assert source.status().detail == {"delivered": 4, "total": 4}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_paced_replay_follows_recorded_times() -> None:
    fake = FakeClock()
    stream = [GazeSample(t, 1.0, 1.0) for t in (0, 100_000_000, 300_000_000)]
    replay = SampleReplay(stream, speed=2.0, clock=fake.clock, sleep=fake.sleep)
    assert replay.receive() == stream[0]
    assert replay.receive() == stream[1]  # due 0.05 s later at speed 2
    assert fake.sleeps == [pytest.approx(0.05)]
    assert replay.receive(timeout_s=0.01) is None  # next one is due 0.1 s later
    assert replay.receive(timeout_s=1.0) == stream[2]
    assert sum(fake.sleeps) == pytest.approx(0.15)
    assert replay.finished


def test_replay_close_and_bad_speed() -> None:
    replay = SampleReplay([GazeSample(0, 1.0, 1.0)])
    replay.close()
    assert replay.receive() is None and replay.finished
    with pytest.raises(ValueError):
        SampleReplay([], speed=-1.0)


def test_header_names_are_matched_whatever_their_case(tmp_path: Path) -> None:
    path = tmp_path / "gaze.csv"
    path.write_text("Timestamp_NS,X,Y,Worn,PX_PER_DEG\n0,1,2,0,30\n")
    assert read_gaze_csv(path) == [GazeSample(0, 1.0, 2.0, False, 30.0)]


def test_reads_a_text_stream() -> None:
    import io

    got = read_gaze_csv(io.StringIO("\ufefftimestamp_ns,x,y\n0,1,2\n"), default_px_per_deg=5.0)
    assert got == [GazeSample(0, 1.0, 2.0, True, 5.0)]
    with pytest.raises(GazeError, match="line 2"):
        read_gaze_csv(io.StringIO("timestamp_ns,x,y\n0,one,2\n"))


def test_paced_replay_waits_through_a_clock_jump_no_longer_than_the_detector_counts() -> None:
    """A recording whose clock jumped forward by hours stalled a real-time replay for those
    hours, and one whose clock jumped back delivered the rest of the recording at once; now a
    jump (beyond the detector's clock_jump_ms) waits nothing, an out-of-order sample waits
    nothing, and every other step is waited for."""
    hours_ns = 3 * 3600 * 10 ** 9
    times = [0, 100_000_000, 100_000_000 + hours_ns, 200_000_000 + hours_ns,  # forward jump
             50_000_000, 150_000_000,                                         # back by hours
             140_000_000, 250_000_000]                                        # one out of order
    assert replay_offsets_s([GazeSample(t, 1.0, 1.0) for t in times]) == pytest.approx(
        [0.0, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4])
    fake = FakeClock()
    replay = SampleReplay([GazeSample(t, 1.0, 1.0) for t in times], speed=1.0, clock=fake.clock, sleep=fake.sleep)
    got = []
    while not replay.finished:
        sample = replay.receive(timeout_s=0.05)
        if sample is not None:
            got.append((sample.timestamp_ns, round(fake.now - 100.0, 6)))
    assert got == [(t, pytest.approx(o)) for t, o in zip(times, [0.0, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4])]
