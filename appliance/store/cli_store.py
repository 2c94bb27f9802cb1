"""``glanceseg study add|list``: the headless way into the store, for scripts and tests."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from appliance.config import Config

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``study`` command group."""
    group = subparsers.add_parser("study", help="store, segment and queue studies without the UI")
    sub = group.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    p = sub.add_parser("add", help="store a photograph, segment it and queue it for the DICOM server")
    p.add_argument("image", type=Path, help="fundus photograph (JPEG, PNG, TIFF or DICOM)")
    p.add_argument("--patient", required=True, help="the clinic's patient identifier")
    p.add_argument("--eye", required=True, choices=("L", "R"), help="which eye")
    p.add_argument("--gaze", type=Path, default=None, help="gaze CSV in image coordinates (gaze mode)")
    p.add_argument("--no-model", action="store_true", help="saliency and domain knowledge only, no SAM model")
    p.set_defaults(handler=run_add)
    p = sub.add_parser("list", help="list studies, newest first, with their delivery state")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(handler=run_list)


def gaze_summary(path: Path) -> dict[str, Any]:
    """Summarise a gaze CSV (samples, valid share, duration) for the report; no samples are kept.

    The file is read by the contract's own reader (:func:`~appliance.gaze.csv_replay.read_gaze_csv`),
    the one ``glanceseg segment --gaze`` uses. Why: a second, stricter parser here refused
    files the contract allows (a BOM, spaces around the header, float timestamps), so a
    recording ``segment`` accepted made ``study add`` fail.

    Raises
    ------
    GazeError
        If the file cannot be read, lacks the ``timestamp_ns,x,y`` columns or holds a value
        that is not a number.
    """
    from appliance.gaze.csv_replay import read_gaze_csv

    samples = read_gaze_csv(path)
    n = len(samples)
    valid = sum(1 for s in samples if s.worn and math.isfinite(s.x) and math.isfinite(s.y))
    duration = (samples[-1].timestamp_ns - samples[0].timestamp_ns) / 1e9 if n > 1 else 0.0
    return {"file": path.name, "samples": n, "valid_samples": valid,
            "valid_fraction": round(valid / n, 4) if n else 0.0, "duration_s": round(duration, 3)}


def run_add(args: argparse.Namespace, config: Config) -> int:
    """Load, check space, segment, store and queue one study; print its id and UID as JSON."""
    from appliance.glance.engine import GlanceEngine
    from appliance.glance.scan import segment_photograph
    from appliance.imaging.io import load_photograph
    from appliance.store import files
    from appliance.store.records import check_study_keys, laterality_mismatch
    from appliance.store.store import Store

    patient_id, eye = check_study_keys(args.patient, args.eye)  # before the slow segmentation; add_study checks again
    photo = load_photograph(args.image, config.imaging)
    files.makedirs_durable(config.data_dir)
    _check_not_added(photo.sha256, patient_id, eye, config)
    mismatch = laterality_mismatch(photo.dicom, eye)
    if mismatch:
        logger.warning("%s", mismatch)
    # Refuse before the (slow) segmentation when space is already short; add_study checks again.
    files.check_space(config.data_dir, int(photo.rgb.nbytes * config.data.study_space_factor), config.data.min_free_mb)
    summary = gaze_summary(args.gaze) if args.gaze else None
    engine = GlanceEngine.from_config(config, use_model=False if args.no_model else None)
    result = segment_photograph(photo, engine, gaze_csv=args.gaze)
    with Store(config) as store:
        study = store.add_study(photo, args.patient, args.eye, result, summary)
        items = store.outbox(study_id=study.id)
    print(json.dumps({"study_id": study.id, "study_uid": study.study_uid, "lesions_shown": len(result.shown),
                      "queued": [i.kind for i in items]}))
    return 0


def _check_not_added(source_sha256: str, patient_id: str, eye: str, config: Config) -> None:
    """Refuse the same file again for the same patient and eye, as the import page does.

    Why: a script run twice (a retry after a timeout) stored a second study of one
    examination, and queued it to the PACS too. For another patient or eye the file may be
    shared on purpose: it is added, with a warning to check the ID.

    Raises
    ------
    StoreError
        Naming the earlier study.
    """
    from appliance.errors import StoreError
    from appliance.store.store import Store

    with Store(config) as store:
        earlier = store.study_of_source(source_sha256)
    if earlier is None:
        return
    when = f"{earlier.created_at[:16].replace('T', ' ')} UTC"
    if (earlier.patient_id, earlier.eye) == (patient_id, eye):
        raise StoreError(f"This photograph was already added for this patient and eye: study {earlier.id}, {when}. "
                         "Nothing was stored again.")
    logger.warning("the same photograph was added before for another patient or eye (study %d, %s): check the ID",
                   earlier.id, when)


def run_list(args: argparse.Namespace, config: Config) -> int:
    """Print the worklist as one JSON object per line."""
    from appliance.store.store import Store

    with Store(config) as store:
        for s in store.worklist(limit=args.limit):
            print(json.dumps({"study_id": s.id, "study_uid": s.study_uid, "eye": s.eye, "created_at": s.created_at,
                              "reviewed": s.reviewed, "delivery": s.delivery, "pending_items": s.pending_items}))
    return 0


__all__ = ["register", "run_add", "run_list", "gaze_summary"]
