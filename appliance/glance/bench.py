"""``glanceseg bench``: every speed, memory and accuracy-cost figure of the shipped path.

Each figure is measured in this one run beside its baseline (the committed fp32 encoder
under onnxruntime's default session options), so ratios hold on a noisy machine. Progress
goes to the logger (stderr); the CLI prints the figures (JSON on stdout with ``--json``).

Latency is measured as the UI runs it: the simulated reader's gaze is replayed in real
time through :class:`~appliance.glance.live.LiveReader` while the background pre-encoder
runs; a fixation's latency runs from the moment the sample that ended it was due (so time
spent queued behind earlier fixations counts) to its first lesions on the event bus and to
its model-refined lesions. "Cold" is a freshly opened photograph; "warm" is one whose tiles
are all encoded.

Memory and pre-encoding are measured in a child process running the shipped path alone
(:func:`child_memory_figures`): a one-shot scan, then every FOV tile pre-encoded, then a scan
over the full cache; ``peak_rss_mb`` is the peak over all three (docs/performance.md).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from appliance.config import Config

logger = logging.getLogger(__name__)

DEFAULT_DATASET = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "idrid-ma"
LATENCY_IDS = ("IDRiD_13", "IDRiD_20")
CPM_IDS_QUICK = ("IDRiD_13", "IDRiD_17", "IDRiD_22")


def _largest(dataset: Path) -> Path:
    from appliance.eval.dataset import load_dataset

    items = load_dataset(dataset)
    return max(items, key=lambda i: i.width * i.height).image_path


def _pct(values: list[float], q: float) -> Optional[float]:
    return round(float(np.percentile(values, q)), 1) if values else None


def replay_latency(config: Config, image: Path, seconds: float, warm: bool, seed: int = 0) -> dict[str, list[float]]:
    """Replay ``seconds`` of simulated reading in real time; return per-fixation latencies (ms)."""
    from appliance.gaze.replay import SampleReplay
    from appliance.gaze.simulated import ReaderParams, simulate_reading
    from appliance.glance.engine import GlanceEngine
    from appliance.glance.live import GlancePipeline, LiveReader
    from appliance.glance.preencode import PreEncoder
    from appliance.imaging.io import load_photograph

    engine = GlanceEngine.from_config(config, use_model=True)
    photo = load_photograph(image, config.imaging)
    session = engine.open(photo)
    reading = simulate_reading(photo.width, photo.height, (), ReaderParams(display=config.display), seed=seed,
                               fov_center_xy=session.fov.center_xy, fov_radius_px=session.fov.radius_px,
                               fov_mask=session.fov.mask)
    t0 = reading.samples[0].timestamp_ns
    samples = [s for s in reading.samples if s.timestamp_ns - t0 <= seconds * 1e9]
    pipeline = GlancePipeline.for_session(session)
    pre = PreEncoder(session, busy=pipeline.busy).start()
    if warm:
        pre.join()
    source = SampleReplay(samples, speed=1.0)
    source.receive(timeout_s=0)  # starts the replay clock at the first sample
    wall0 = time.perf_counter()
    reader = LiveReader(pipeline, source).start()
    reader.join()
    pre.stop()
    first, done = [], []
    for t in pipeline.stats.timings:
        if not t.cells:
            continue
        due = wall0 + (t.ended_ns - t0) / 1e9
        if t.first_at is not None:
            first.append((t.first_at - due) * 1e3)
        done.append((t.done_at - due) * 1e3)
    return {"first": first, "done": done}


def _peak_rss_mb(status: Path = Path("/proc/self/status")) -> float:
    """This process's peak resident set so far, MB.

    Linux's ``VmHWM``, not ``ru_maxrss``: Python starts a child with vfork, and at exec the
    kernel carries the parent's high-water mark into the child's ``ru_maxrss``, so a child
    of the benchmark (itself ~3 GB with both runtimes loaded) reported the parent's peak.
    ``VmHWM`` belongs to the child's own address space. ``ru_maxrss`` is the fallback
    elsewhere.
    """
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _memory_child(config_arg: str, image_arg: str) -> dict[str, float]:
    """What the memory child measures, in this process (run it in a fresh one).

    Three stages, each the shipped path: a one-shot scan of the photograph (what
    ``glanceseg segment`` does); the photograph opened in the reader with every FOV tile
    pre-encoded in the background (the UI); a scan over that full embedding cache (the
    reader's whole-FOV pass). The peak over all three is the appliance's working set for
    one photograph: the cache of a pre-encoded photograph and the detector's whole-image
    pass are both resident at the end.
    """
    from appliance.config import load_config
    from appliance.glance.engine import GlanceEngine
    from appliance.glance.preencode import PreEncoder
    from appliance.glance.scan import segment_photograph
    from appliance.imaging.io import load_photograph

    cfg = load_config(Path(config_arg) if config_arg else None)
    engine = GlanceEngine.from_config(cfg)
    photo = load_photograph(Path(image_arg), cfg.imaging)
    segment_photograph(photo, engine)
    figures: dict[str, float] = {"peak_rss_mb_scan": round(_peak_rss_mb(), 1)}
    session = engine.open(photo)
    pre = PreEncoder(session).start()
    pre.join()
    figures["preencode_s"] = round(pre.seconds or 0.0, 1)
    figures["preencode_tiles"] = pre.total
    figures["preencode_prompted_s"] = round(pre.prompted_seconds or 0.0, 1)
    figures["preencode_prompted_tiles"] = pre.prompted
    predictor = engine.predictor
    if predictor is not None:
        figures["embedding_cache_mb"] = round(predictor.cache_nbytes / 2 ** 20, 1)
        figures["embedding_spill_mb"] = round(predictor.spill_nbytes / 2 ** 20, 1)
    figures["peak_rss_mb_preencode"] = round(_peak_rss_mb(), 1)
    session.scan()
    figures["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return figures


def child_memory_figures(config_path: Optional[Path], image: Path) -> dict[str, float]:
    """Run :func:`_memory_child` in a child process; return its figures.

    A child, so the peak RSS is the shipped path's alone (not the benchmark's baselines and
    second runtime). Keys: ``peak_rss_mb`` (over all stages), ``peak_rss_mb_scan`` (the
    one-shot scan alone), ``peak_rss_mb_preencode``, ``preencode_s``, ``preencode_tiles``,
    ``preencode_prompted_s`` and ``preencode_prompted_tiles`` (the tiles the model will be
    prompted on, which the pre-encoder takes first),
    ``embedding_cache_mb`` (the embeddings held in RAM once the photograph is pre-encoded),
    ``embedding_spill_mb`` (those kept on disk, ``[model] spill_tiles``).
    """
    code = ("import json, sys\n"
            "from appliance.glance.bench import _memory_child\n"
            "print(json.dumps(_memory_child(sys.argv[1], sys.argv[2])))\n")
    out = subprocess.run([sys.executable, "-c", code, str(config_path or ""), str(image)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpm(config: Config, dataset: Path, ids: Optional[tuple[str, ...]], variant: str) -> float:
    from appliance.eval.dataset import iter_split, load_dataset
    from appliance.eval.runner import evaluate
    from appliance.glance.engine import GlanceEngine
    from appliance.glance.scan import segment_photograph
    from appliance.imaging.io import load_photograph

    cfg = config.replace(model={"variant": variant})
    engine = GlanceEngine.from_config(cfg, use_model=True)
    items = load_dataset(dataset, ids) if ids else list(iter_split(dataset, "report"))
    report = evaluate(items, {variant: lambda item: segment_photograph(
        load_photograph(item.image_path, cfg.imaging), engine)}, progress=False)[0]
    return round(report.froc.cpm, 4)


def run_benchmark(config: Config, dataset: Optional[Path] = None, quick: bool = False,
                  config_path: Optional[Path] = None) -> dict[str, object]:
    """Measure every figure; return them as one JSON-ready dict (keys of DESIGN.md and more)."""
    from appliance.glance.bench_model import run_model_bench
    from appliance.glance.candidates import detect
    from appliance.glance.engine import GlanceEngine
    from appliance.glance.scan import segment_photograph
    from appliance.imaging.io import load_photograph

    dataset = dataset or DEFAULT_DATASET
    repeats = 2 if quick else 5
    figures: dict[str, object] = {}
    logger.warning("bench: model figures (encoder naive vs shipped, decoder, matmul floor, int8 agreement)")
    figures.update(run_model_bench(config, dataset, repeats=repeats))

    largest = _largest(dataset)
    photo = load_photograph(largest, config.imaging)
    engine = GlanceEngine.from_config(config, use_model=True)
    session = engine.open(photo)

    logger.warning("bench: saliency per ROI")
    rng = np.random.default_rng(0)
    ys, xs = np.nonzero(session.fov.mask[::16, ::16])
    side = 320  # a fixation's new ground at the fitted view: a disc of ~1.8 deg, ~95 image px/deg
    times = []
    for i in rng.choice(len(xs), size=10 if quick else 40, replace=False):
        cx, cy = int(xs[i]) * 16, int(ys[i]) * 16
        window = (max(0, cx - side // 2), max(0, cy - side // 2),
                  min(photo.width, cx + side // 2), min(photo.height, cy + side // 2))
        start = time.perf_counter()
        detect(photo.rgb, session.fov, session.um_per_px, window=window)
        times.append((time.perf_counter() - start) * 1e3)
    figures["saliency_ms_per_roi"] = round(float(np.median(times)), 1)

    logger.warning("bench: full scan of %s", largest.name)
    engine.forget(photo)
    start = time.perf_counter()
    segment_photograph(photo, engine)
    figures["scan_s"] = round(time.perf_counter() - start, 1)

    logger.warning("bench: fixation -> lesions latency, real-time replay (cold, then warm)")
    seconds = 15.0 if quick else 45.0
    for kind in ("cold", "warm"):
        first, done = [], []
        for k, image_id in enumerate(LATENCY_IDS[:1] if quick else LATENCY_IDS):
            lat = replay_latency(config, dataset / "images" / f"{image_id}.jpg", seconds, warm=(kind == "warm"), seed=k)
            first += lat["first"]
            done += lat["done"]
        figures[f"fixation_to_lesions_ms_p50_{kind}"] = _pct(first, 50)
        figures[f"fixation_to_lesions_ms_p95_{kind}"] = _pct(first, 95)
        figures[f"fixation_to_model_lesions_ms_p50_{kind}"] = _pct(done, 50)
        figures[f"fixation_to_model_lesions_ms_p95_{kind}"] = _pct(done, 95)
        figures[f"fixations_{kind}"] = len(done)

    logger.warning("bench: pre-encoding every FOV tile of %s and peak RSS (child process)", largest.name)
    figures.update(child_memory_figures(config_path, largest))

    logger.warning("bench: CPM fp32 vs int8")
    ids = CPM_IDS_QUICK if quick else None
    figures["cpm_fp32"] = _cpm(config, dataset, ids, "fp32")
    figures["cpm_int8"] = _cpm(config, dataset, ids, "int8")
    figures["cpm_images"] = "quick: " + ",".join(ids) if ids else "IDRiD_13-24"
    logger.info("bench figures: %s", json.dumps(figures))
    return figures
