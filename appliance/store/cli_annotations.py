"""``glanceseg annotations export DIR``: clinicians' decisions as a training set."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from appliance.config import Config

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``annotations`` command group."""
    group = subparsers.add_parser("annotations", help="clinicians' decisions as training examples")
    sub = group.add_subparsers(dest="annotations_command", metavar="ACTION", required=True)
    p = sub.add_parser("export", help="write every example to DIR (layout: docs/annotations.md)")
    p.add_argument("dir", type=Path, help="empty or new folder")
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace, config: Config) -> int:
    """Export the annotations of the store in ``config.data_dir``; print the manifest."""
    from appliance.store.annotations import export
    from appliance.store.store import Store

    with Store(config) as store:
        manifest = export(store, args.dir)
    print(json.dumps(manifest, indent=1, sort_keys=True))
    return 0
