"""``glanceseg simulate-gaze IMAGE [--mask MASK] [--seed N] --out GAZE_CSV``.

Writes the simulated reader's gaze for one photograph in the gaze CSV contract (with
``px_per_deg``), and optionally a JSON sidecar naming the MAs the reader dwelt on, for
evaluation ("sensitivity among the MAs the reader dwelt on").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import Config
from appliance.errors import GazeError, ImageError
from appliance.gaze.csv_replay import write_gaze_csv
from appliance.gaze.simulated import ReaderParams, SimulatedReading, ma_targets_from_mask, simulate_reading

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``simulate-gaze`` command."""
    p = subparsers.add_parser("simulate-gaze", help="write a simulated reader's gaze CSV for a photograph")
    p.add_argument("image", type=Path, help="fundus photograph")
    p.add_argument("--mask", type=Path, default=None,
                   help="ground-truth MA mask (8-bit PNG, image size, >0 = MA) the reader may notice")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same gaze")
    p.add_argument("--out", type=Path, required=True, help="gaze CSV to write")
    p.add_argument("--truth-out", type=Path, default=None,
                   help="JSON with the MAs and which ones the reader dwelt on")
    p.add_argument("--tracker-error-deg", type=float, default=None,
                   help="mean tracker error per fixation in degrees (default 1.5)")
    p.add_argument("--offset-deg", type=float, nargs=2, default=None, metavar=("DX", "DY"),
                   help="constant tracker offset in degrees (default 0 0)")
    p.set_defaults(handler=run_simulate_gaze)


def _load_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    import cv2  # imported here: only the mask needs it

    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ImageError(f"Cannot read the mask {path}.")
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != shape:
        raise ImageError(f"The mask {path.name} is {mask.shape[1]}x{mask.shape[0]} px but the "
                         f"photograph is {shape[1]}x{shape[0]} px.")
    return mask > 0


def _truth(reading: SimulatedReading, image: Path, params: ReaderParams) -> dict[str, Any]:
    dwelt = set(reading.dwelt)
    return {
        "image": image.name,
        "seed": reading.seed,
        "px_per_deg": reading.px_per_deg,
        "params": dataclasses.asdict(params),
        "mas": [{"index": m.index, "x": round(m.x, 2), "y": round(m.y, 2), "radius_px": round(m.radius_px, 2),
                 "dwelt": m.index in dwelt} for m in reading.mas],
        "dwelt": list(reading.dwelt),
        "fixations": [dataclasses.asdict(f) for f in reading.intents],
    }


def run_simulate_gaze(args: argparse.Namespace, config: Config) -> int:
    """Handler of ``simulate-gaze``; returns the exit status."""
    from appliance.imaging.fov import find_fov
    from appliance.imaging.io import load_photograph

    photo = load_photograph(args.image, config.imaging)
    height, width = photo.rgb.shape[:2]
    fov = find_fov(photo.rgb)
    mas = ma_targets_from_mask(_load_mask(args.mask, (height, width))) if args.mask else []
    overrides: dict[str, Any] = {"display": config.display}
    if args.tracker_error_deg is not None:
        overrides["tracker_error_deg"] = args.tracker_error_deg
    if args.offset_deg is not None:
        overrides["offset_deg"] = tuple(args.offset_deg)
    try:
        params = ReaderParams(**overrides)
    except ValueError as exc:
        raise GazeError(str(exc)) from exc
    reading = simulate_reading(width, height, mas, params, seed=args.seed, fov_center_xy=fov.center_xy,
                               fov_radius_px=fov.radius_px, fov_mask=fov.mask)
    rows = write_gaze_csv(args.out, reading.samples)
    if args.truth_out:
        try:
            args.truth_out.write_text(json.dumps(_truth(reading, args.image, params), indent=1) + "\n",
                                      encoding="utf-8")
        except OSError as exc:
            raise GazeError(f"Cannot write {args.truth_out}: {exc.strerror or exc}.") from exc
    print(f"{args.out}: {rows} samples, {rows / params.sample_rate_hz:.1f} s, "
          f"{len(reading.intents)} fixations, dwelt on {len(reading.dwelt)} of {len(mas)} MAs, "
          f"{reading.px_per_deg:.1f} image px/deg")
    return 0
