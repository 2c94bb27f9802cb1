"""``glanceseg eval DATASET_DIR``: figures on a data set laid out like ``idrid-ma``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.config import Config

if TYPE_CHECKING:
    from appliance.gaze.simulated import ReaderParams

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` sub-command."""
    p = subparsers.add_parser("eval", help="FROC / CPM, pixel AUPR and Dice on a data set (index.csv + masks)")
    p.add_argument("dataset", type=Path, help="folder with index.csv, images/ and masks/")
    p.add_argument("--split", choices=("report", "tune", "all"), default="all",
                   help="idrid-ma's fixed split: report = IDRiD_13-24, tune = 01-12 (default: all rows)")
    p.add_argument("--ids", nargs="*", default=None, help="only these ids")
    p.add_argument("--gaze", choices=("simulated",), default=None,
                   help="gaze mode with the simulated reader instead of scan mode")
    p.add_argument("--seed", type=int, default=0, help="simulated reader's seed")
    p.add_argument("--reader", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a simulated-reader parameter (appliance.gaze.simulated.ReaderParams), "
                        "e.g. tracker_error_deg=1.8 or offset_deg=0.5,-0.3; repeatable")
    p.add_argument("--variants", default="model,saliency",
                   help="comma list: model (saliency + SAM + DKF), saliency (no model)")
    p.add_argument("--out", type=Path, default=Path("artifacts/eval"), help="report folder")
    p.add_argument("--write-outputs", action="store_true", help="also write each image's segment outputs")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run_eval)


def _items(args: argparse.Namespace):
    from appliance.eval.dataset import iter_split, load_dataset

    items = list(iter_split(args.dataset, args.split)) if args.ids is None else load_dataset(args.dataset, args.ids)
    if not items:
        from appliance.errors import ImageError

        raise ImageError(f"No images selected from {args.dataset}.")
    return items


def reader_params(overrides: list[str], config: Config) -> ReaderParams:
    """The simulated reader of ``config``'s display with ``FIELD=VALUE`` overrides.

    Lets a check ask how the figures hold for a reader unlike the default one (another
    tracker error, a calibration offset, longer dwells, a zoomed display).
    """
    import dataclasses

    from appliance.gaze.simulated import ReaderParams

    names = [f.name for f in dataclasses.fields(ReaderParams) if f.name != "display"]
    changes: dict[str, object] = {"display": config.display}
    for item in overrides:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in names:
            raise SystemExit(f"glanceseg eval: --reader {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{', '.join(names)} (the display is [display] in the config)")
        current = getattr(ReaderParams(), name)
        try:
            if isinstance(current, tuple):
                changes[name] = tuple(type(v)(x) for v, x in zip(current, text.split(","), strict=True))
            else:
                changes[name] = type(current)(text)
        except ValueError as exc:
            raise SystemExit(f"glanceseg eval: --reader {item!r}: {exc}") from exc
    return ReaderParams(**changes)


def run_eval(args: argparse.Namespace, config: Config) -> int:
    """Handler of ``eval``."""
    from appliance.glance.engine import GlanceEngine

    items = _items(args)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(names) - {"model", "saliency"}
    if unknown:
        raise SystemExit(f"glanceseg eval: unknown variant(s) {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)
    engines = {name: GlanceEngine.from_config(config, use_model=(name == "model")) for name in names}
    if args.gaze:
        from appliance.eval.gaze_eval import evaluate_gaze

        reader = reader_params(args.reader, config)
        doc = {name: evaluate_gaze(items, engine, seed=args.seed, reader=reader, progress=not args.no_progress)
               for name, engine in engines.items()}
        (args.out / "gaze_report.json").write_text(json.dumps(doc, indent=1))
        for name, figures in doc.items():
            headline = {k: v for k, v in figures.items() if k != "per_image"}
            print(f"{name}: {json.dumps(headline)}")
        return 0

    from appliance.eval.runner import evaluate, write_report
    from appliance.glance.outputs import write_outputs
    from appliance.glance.scan import segment_photograph
    from appliance.imaging.io import load_photograph

    def segmenter(name: str, engine: GlanceEngine):
        def segment(item):
            photo = load_photograph(item.image_path, config.imaging)
            result = segment_photograph(photo, engine)
            if args.write_outputs:
                write_outputs(result, photo.rgb, item.image_path.name, args.out / name / item.id)
            return result
        return segment

    reports = evaluate(items, {n: segmenter(n, e) for n, e in engines.items()}, progress=not args.no_progress)
    paths = write_report(reports, args.out)
    for report in reports:
        print(json.dumps(report.summary()))
    print(f"report: {paths['json']}  per image: {paths['csv']}  FROC: {paths['png']}")
    return 0
