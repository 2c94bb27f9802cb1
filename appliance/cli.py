"""The ``glanceseg`` command.

Each area contributes its sub-commands through ``register(subparsers)`` in its own
``cli_<area>.py`` module; this file only wires them together, sets up logging and turns
:class:`~appliance.errors.ApplianceError` into a one-line message and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from appliance.config import load_config
from appliance.errors import ApplianceError

logger = logging.getLogger(__name__)

#: Modules whose ``register(subparsers)`` adds sub-commands, in help order.
COMMAND_MODULES = (
    "appliance.glance.cli_glance",    # segment, bench
    "appliance.eval.cli_eval",        # eval
    "appliance.gaze.cli_gaze",        # simulate-gaze
    "appliance.gaze.cli_tracker",     # tracker check
    "appliance.store.cli_store",      # study add|list
    "appliance.sync.cli_sync",        # sync, export-usb
    "appliance.sync.cli_models",      # models check|list|install|rollback|reconcile|sign|verify|keygen|warmup, software
    "appliance.store.cli_annotations",  # annotations export
    "appliance.finetune.cli_finetune",  # finetune
    "appliance.ui.cli_ui",            # serve, status
    "appliance.ui.cli_users",         # users list|unlock|set-pin
)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every area's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="glanceseg", description="GlanceSeg: gaze-guided microaneurysm segmentation for DR screening.")
    parser.add_argument("--config", type=Path, default=None, help="TOML configuration file (default: $GLANCESEG_CONFIG)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config)
        return int(args.handler(args, config) or 0)
    except ApplianceError as exc:
        print(f"glanceseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
