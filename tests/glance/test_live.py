"""The incremental pipeline: a streamed gaze recording ends with exactly the batch result."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from appliance.gaze.base import GazeSample
from appliance.gaze.csv_replay import read_gaze_csv, write_gaze_csv
from appliance.gaze.simulated import ReaderParams, simulate_reading
from appliance.glance.engine import GlanceEngine
from appliance.glance.live import GlancePipeline, LiveReader, segment_gaze
from appliance.gaze.csv_replay import CsvReplaySource
from appliance.imaging.io import load_photograph

DEMO = Path(__file__).resolve().parents[2] / "appliance" / "demo" / "IDRiD_03.jpg"


@pytest.fixture(scope="module")
def photo():
    from appliance.config import ImagingConfig

    return load_photograph(DEMO, ImagingConfig())


@pytest.fixture(scope="module")
def recording(photo, tmp_path_factory) -> Path:
    """Four seconds of a simulated reader on the demo photograph, written as a gaze CSV."""
    from appliance.imaging.fov import find_fov

    fov = find_fov(photo.rgb)
    reading = simulate_reading(photo.width, photo.height, (), ReaderParams(), seed=3,
                               fov_center_xy=fov.center_xy, fov_radius_px=fov.radius_px, fov_mask=fov.mask)
    samples = [s for s in reading.samples if s.timestamp_ns - reading.samples[0].timestamp_ns < 4e9]
    path = tmp_path_factory.mktemp("gaze") / "gaze.csv"
    write_gaze_csv(path, samples)
    return path


def _as_tuples(lesions):
    return {l.id: (l.x, l.y, l.score, l.area_px, l.source) for l in lesions}


def _as_detected(lesions):
    """As :func:`_as_tuples` with the detector's score: what the live events carry, before the
    gaze-mode result weighs in the whole reading's gaze (:mod:`appliance.glance.gaze_scoring`)."""
    return {l.id: (l.x, l.y, l.features.get("detector_score", l.score), l.area_px, l.source) for l in lesions}


def test_stream_equals_batch(config, photo, recording) -> None:
    engine = GlanceEngine.from_config(config, use_model=False)
    samples = read_gaze_csv(recording)
    batch = segment_gaze(engine.open(photo), samples)
    assert batch.lesions, "the recording should glance at some candidates"

    session = engine.open(photo)
    pipeline = GlancePipeline.for_session(session)
    seen = []
    pipeline.subscribe(seen.append)
    for sample in samples:  # one by one, as a live source delivers them
        pipeline.feed(sample)
    pipeline.flush()
    stream = pipeline.result()

    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    final = {e.lesion.id: e.lesion for e in seen}
    assert _as_tuples(final.values()) == _as_detected(stream.lesions)
    # The result weighs in the reading's gaze: its own scores, order and display threshold.
    assert all("gaze_evidence" in l.features for l in stream.lesions)
    assert [l.score for l in stream.lesions] == sorted((l.score for l in stream.lesions), reverse=True)
    assert stream.display_threshold == config.glance.gaze_display_threshold
    a, b = _as_tuples(batch.lesions), _as_tuples(stream.lesions)
    assert a.keys() == b.keys()
    for key in a:
        assert math.hypot(a[key][0] - b[key][0], a[key][1] - b[key][1]) <= 0.5
        assert a[key][2:] == b[key][2:]


def test_only_new_ground_is_processed(config, photo, recording) -> None:
    engine = GlanceEngine.from_config(config, use_model=False)
    session = engine.open(photo)
    pipeline = GlancePipeline.for_session(session)
    samples = read_gaze_csv(recording)
    pipeline.feed_many(samples)
    pipeline.flush()
    processed = set(session.done)
    again = GlancePipeline.for_session(session)  # the same gaze once more: nothing new to do
    events = again.feed_many(samples) + again.flush()
    assert events == []
    assert set(session.done) == processed
    assert pipeline.stats.cells == len(processed)


def test_bad_samples_do_not_stop_the_stream(config, photo) -> None:
    engine = GlanceEngine.from_config(config, use_model=False)
    pipeline = GlancePipeline.for_session(engine.open(photo))
    cx, cy = photo.width / 2, photo.height / 2
    t = 1_000_000_000
    bad = [
        GazeSample(t, math.nan, math.nan),
        GazeSample(t + 5_000_000, cx, cy, worn=False),
        GazeSample(t - 10_000_000_000, cx, cy),           # clock jumps back
        GazeSample(t + 10_000_000, 1e9, -1e9),             # off the image
    ]
    good = [GazeSample(t + 20_000_000 + i * 5_000_000, cx + (i % 3), cy) for i in range(80)]
    pipeline.feed_many(bad + good)
    pipeline.flush()
    counters = pipeline.gaze_map.counters
    assert sum(v for k, v in counters.items() if k != "accepted") >= 3
    assert pipeline.stats.fixations >= 1


def test_live_reader_replays_a_file(config, photo, recording) -> None:
    engine = GlanceEngine.from_config(config, use_model=False)
    session = engine.open(photo)
    pipeline = GlancePipeline.for_session(session)
    got = []
    pipeline.subscribe(got.append)
    reader = LiveReader(pipeline, CsvReplaySource(recording)).start()
    reader.join(timeout_s=120)
    assert not reader.running and reader.error is None
    batch = segment_gaze(engine.open(photo), read_gaze_csv(recording))
    assert _as_tuples({e.lesion.id: e.lesion for e in got}.values()) == _as_detected(batch.lesions)


def test_stream_equals_batch_with_the_model_refining_in_the_background(config, photo) -> None:
    """With the real model: saliency lesions first ("new"), model masks later ("updated") from
    the refinement thread, and the end state equal to a batch run."""
    from appliance.imaging.io import Photograph

    crop = Photograph(np.ascontiguousarray(photo.rgb[1000:1640, 1250:1890]), "crop", "crop-sha")
    cx, cy = 320.0, 320.0
    t0 = 1_000_000_000
    samples = []
    for k, (x, y) in enumerate([(cx - 120, cy - 100), (cx + 130, cy + 90)]):
        base = t0 + k * 600_000_000
        samples += [GazeSample(base + i * 5_000_000, x + (i % 3), y, True, 60.0) for i in range(80)]
    engine = GlanceEngine.from_config(config)
    batch = segment_gaze(engine.open(crop), samples)

    session = engine.open(crop)
    pipeline = GlancePipeline.for_session(session)
    seen = []
    pipeline.subscribe(seen.append)
    for sample in samples:
        pipeline.feed(sample)
    pipeline.flush()
    pipeline.close()
    kinds = [e.kind for e in seen]
    assert "new" in kinds
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)
    assert _as_tuples(pipeline.result().lesions) == _as_tuples(batch.lesions)
    assert any(l.source == "model" for l in batch.lesions)  # the two fixations reach MAs the model outlines
    assert "updated" in kinds and kinds.index("updated") > kinds.index("new")


def test_closing_the_pipeline_drops_the_refinement_not_started(config, photo, int8_runtime, monkeypatch) -> None:
    """A reader page that left, or the server stopping: the model stops at the next tile instead
    of refining, for no one, every fixation still queued (tens of seconds on a photograph
    prompted on dozens of tiles; the stored result holds the scan's model masks)."""
    import threading

    from appliance.glance.predictor import SamPredictor

    session = GlanceEngine(config, predictor=SamPredictor(int8_runtime)).open(photo)
    pipeline = GlancePipeline.for_session(session)
    encoding, go_on, encoded = threading.Event(), threading.Event(), []
    real_encode = int8_runtime.encode

    def encode(tile):
        encoded.append(1)
        encoding.set()
        go_on.wait(30)
        return real_encode(tile)

    monkeypatch.setattr(int8_runtime, "encode", encode)
    t0 = 1_000_000_000
    # Fixations on two places whose candidates prompt the model (cells (10, 5-6) and (21-22, 16)).
    for k, (x, y) in enumerate([(360.0, 670.0), (1050.0, 1380.0), (1300.0, 400.0)]):
        base = t0 + k * 700_000_000
        pipeline.feed_many([GazeSample(base + i * 5_000_000, x + (i % 3), y, True, 40.0) for i in range(100)])
    pipeline.feed(GazeSample(t0 + 3 * 700_000_000, 2000.0, 2000.0, True, 40.0))  # ends the last fixation
    assert encoding.wait(60)
    closing = threading.Thread(target=pipeline.close)
    closing.start()
    while not pipeline._stop.is_set():
        closing.join(0.01)
    go_on.set()
    closing.join(120)
    assert not closing.is_alive()
    assert len(encoded) == 1  # the tile in flight, nothing after it


class _FakeClock:
    """A monotonic clock that moves only when the replay sleeps: pacing without wall time."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _odd_recording(photo, seed: int = 5) -> list[GazeSample]:
    """A 30 Hz reading with what trackers and exporters do wrong: timing jitter, repeated and
    out-of-order rows, a blink, not-worn rows, gaze off the photograph, px_per_deg noise, a
    long pause and a clock that jumps back by hours."""
    from appliance.imaging.fov import find_fov

    fov = find_fov(photo.rgb)
    reading = simulate_reading(photo.width, photo.height, (), ReaderParams(sample_rate_hz=30.0), seed=seed,
                               fov_center_xy=fov.center_xy, fov_radius_px=fov.radius_px, fov_mask=fov.mask)
    t0 = reading.samples[0].timestamp_ns
    base = [s for s in reading.samples if s.timestamp_ns - t0 < 5e9]
    rng = np.random.default_rng(seed)
    out: list[GazeSample] = []
    for i, s in enumerate(base):
        t = s.timestamp_ns + int(rng.integers(-3_000_000, 3_000_000))
        if i >= len(base) // 2:
            t -= 3 * 3600 * 10 ** 9  # the clock jumps back by hours
        if i >= 3 * len(base) // 4:
            t += 2 * 10 ** 9  # a pause of two seconds
        ppd = s.px_per_deg * (1.0 + 0.02 * math.sin(i / 5))
        x, y, worn = s.x, s.y, s.worn
        if i % 41 == 7:
            x = y = math.nan
        elif i % 53 == 11:
            worn = False
        elif i % 47 == 13:
            x, y = -50.0, photo.height + 50.0
        out.append(GazeSample(t, x, y, worn, ppd))
        if i % 17 == 3:
            out.append(out[-1])  # a row written twice
        if i % 29 == 5:
            out.append(GazeSample(t - 40_000_000, x, y, worn, ppd))  # an out-of-order row
    return out


def test_a_slow_paced_replay_of_an_odd_recording_equals_the_batch_result(config, photo, tmp_path) -> None:
    """Streamed through LiveReader from a CSV replayed at a quarter speed, an odd recording ends
    with the batch result (same ids, centroids within 0.5 px). The reader advanced the stream's
    clock by its wall-clock poll while the replay was quiet, so at a quarter speed every
    30 Hz step looked like a gap and no fixation survived."""
    path = tmp_path / "odd.csv"
    write_gaze_csv(path, _odd_recording(photo))
    engine = GlanceEngine.from_config(config, use_model=False)
    batch = segment_gaze(engine.open(photo), read_gaze_csv(path))
    assert batch.gaze_samples["fixations"] >= 5 and batch.lesions
    for reason in ("no_gaze", "not_worn", "off_image", "backwards", "clock_jump"):
        assert batch.gaze_samples[reason] > 0, reason

    fake = _FakeClock()
    source = CsvReplaySource(path, speed=0.25, clock=fake.clock, sleep=fake.sleep)
    pipeline = GlancePipeline.for_session(engine.open(photo))
    reader = LiveReader(pipeline, source).start()
    reader.join(timeout_s=120)
    assert not reader.running and reader.error is None
    stream = pipeline.result()
    assert stream.gaze_samples["fixations"] == batch.gaze_samples["fixations"]
    a, b = {l.id: (l.x, l.y) for l in batch.lesions}, {l.id: (l.x, l.y) for l in stream.lesions}
    assert a.keys() == b.keys()
    assert all(math.hypot(a[k][0] - b[k][0], a[k][1] - b[k][1]) <= 0.5 for k in a)
