"""Error types of the appliance.

One base class, :class:`ApplianceError`, with one subclass per subpackage, so a
caller (the CLI, the UI) can catch what the appliance raises on purpose and
report it in plain words, while programming errors still surface as tracebacks.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base class of every error the appliance raises on purpose."""


class ConfigError(ApplianceError):
    """The configuration file or an environment override is invalid."""


class ImageError(ApplianceError):
    """A photograph cannot be read or is unusable (corrupt, too large, wrong layout)."""


class ModelError(ApplianceError):
    """A model file is missing, altered, or cannot run."""


class GazeError(ApplianceError):
    """A gaze source failed or a gaze recording is malformed."""


class OutputError(ApplianceError):
    """A command's output folder or file cannot be created or written."""


class StoreError(ApplianceError):
    """The local store cannot complete an operation (disk full, schema mismatch)."""


class SyncError(ApplianceError):
    """Delivery to the central DICOM server failed."""


class HardwareError(ApplianceError):
    """A button, LED or buzzer cannot be driven."""


class UpdateError(ApplianceError):
    """A model or software bundle was refused (bad signature, downgrade, wrong family)."""


class Cancelled(ApplianceError):
    """Work stopped on request between two steps (the appliance is stopping); it runs again
    at the next start."""
