"""Delivery to the clinic's DICOM server, and signed model / software updates.

Studies: :mod:`export` (the Ophthalmic Photography, Segmentation and Comprehensive SR instances),
:mod:`instances` (built once per outbox item, same bytes on every retry), :mod:`dicomweb` (STOW-RS,
QIDO-RS, WADO-RS over TLS), :mod:`engine` (one pass, confirmation, full-jitter backoff),
:mod:`scheduler` (background thread, "Sync now", the button), :mod:`usb_export`; the commands are in
:mod:`cli_sync`. Updates: :mod:`model_updates`, :mod:`bundles`, :mod:`cli_models`.
"""

from appliance.sync.dicomweb import DicomwebClient, ServerUnavailable
from appliance.sync.engine import PassReport, Syncer, backoff_delay_s
from appliance.sync.scheduler import SyncIndicator, SyncScheduler, start_background_sync
from appliance.sync.usb_export import ExportReport, export_undelivered

__all__ = [
    "DicomwebClient",
    "ServerUnavailable",
    "Syncer",
    "PassReport",
    "backoff_delay_s",
    "SyncScheduler",
    "SyncIndicator",
    "start_background_sync",
    "export_undelivered",
    "ExportReport",
]
