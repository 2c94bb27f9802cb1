"""``glanceseg segment`` and ``glanceseg bench``."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from appliance.config import Config

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``segment`` and ``bench`` sub-commands."""
    seg = subparsers.add_parser("segment", help="segment the microaneurysms of one photograph")
    seg.add_argument("image", type=Path, help="JPEG, PNG, TIFF or DICOM photograph")
    seg.add_argument("--gaze", type=Path, default=None, help="gaze CSV in image px (gaze mode); without it: scan mode")
    seg.add_argument("--px-per-deg", type=positive_px_per_deg, default=None,
                     help="image px per degree for gaze rows without px_per_deg")
    seg.add_argument("--out", type=Path, required=True,
                     help="output folder (lesions.json, mask.png, overlay.png, score.png)")
    seg.add_argument("--no-model", action="store_true", help="saliency-only lesions (no SAM model)")
    seg.set_defaults(handler=run_segment)

    bench = subparsers.add_parser("bench", help="measure speed, memory and accuracy cost of the shipped path")
    bench.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    bench.add_argument("--dataset", type=Path, default=None, help="idrid-ma folder (default: ../shared/data/idrid-ma)")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions and images (a smoke run)")
    bench.set_defaults(handler=run_bench)


def positive_px_per_deg(text: str) -> float:
    """Parse ``--px-per-deg``: a finite number above zero.

    Why: 0, a negative number, nan or inf gives no usable scale, so every sample without its
    own px_per_deg was dropped and the run "succeeded" with no lesion; a typo is refused here.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is not a finite number above zero.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of image px per degree above zero")
    return value


def run_segment(args: argparse.Namespace, config: Config) -> int:
    """Segment one photograph and write the contract files."""
    from appliance.glance.engine import GlanceEngine
    from appliance.glance.outputs import check_out_dir, write_outputs
    from appliance.glance.scan import segment_photograph
    from appliance.imaging.io import load_photograph

    check_out_dir(args.out)  # a bad --out is refused before the slow segmentation
    photo = load_photograph(args.image, config.imaging)
    engine = GlanceEngine.from_config(config, use_model=False if args.no_model else None)
    result = segment_photograph(photo, engine, gaze_csv=args.gaze, px_per_deg=args.px_per_deg)
    write_outputs(result, photo.rgb, args.image.name, args.out)
    shown = len(result.shown)
    print(f"{args.image.name}: {len(result.lesions)} candidates, {shown} shown"
          f"{'' if result.gradable else ' (ungradable: retake advised)'} -> {args.out}")
    for reason in result.quality_reasons.values():
        print(f"  {reason}")
    counts = result.gaze_samples
    if counts is not None and not counts.get("fixations"):
        seen = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v) or "no samples"
        print(f"  No fixation in the gaze recording ({seen}): nothing was glanced at.")
    return 0


def run_bench(args: argparse.Namespace, config: Config) -> int:
    """Run the benchmark and print its figures."""
    from appliance.glance.bench import run_benchmark

    figures = run_benchmark(config, dataset=args.dataset, quick=args.quick, config_path=args.config)
    if args.json:
        json.dump(figures, sys.stdout)
        sys.stdout.write("\n")
    else:
        for key, value in figures.items():
            print(f"{key:40s} {value}")
    return 0
