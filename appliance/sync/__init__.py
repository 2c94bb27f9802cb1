"""Delivery to the clinic's DICOM server, and signed model / software updates.

Studies: :mod:`export` (the Ophthalmic Photography, Segmentation and Comprehensive SR instances),
:mod:`instances` (built once per outbox item, same bytes on every retry), :mod:`dicomweb` (STOW-RS,
QIDO-RS, WADO-RS over TLS), :mod:`engine` (one pass, confirmation, full-jitter backoff),
:mod:`scheduler` (background thread, "Sync now", the button), :mod:`usb_export`; the commands are in
:mod:`cli_sync`. Updates: :mod:`model_updates`, :mod:`bundles`, :mod:`cli_models`.
The package imports nothing itself (pydicom and cryptography load with the module that needs them).
"""
