"""What the UI needs from the rest of the appliance, bundled so the app factory stays testable.

``create_app(config, services)`` takes a :class:`Services`; ``glanceseg serve`` builds real ones
with :func:`build_services`. Each field is a small callable or factory, so a test (or the lead,
when wiring) can replace one part without touching the others. Parts whose owning package is not
importable yet fall back to clearly named stand-ins in ``appliance/ui/`` (marked SWAP).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import numpy as np

from appliance.config import Config
from appliance.gaze.base import GazeSample, SourceStatus
from appliance.glance.lesions import Lesion

logger = logging.getLogger(__name__)


@dataclass
class LesionEvent:
    """A lesion the live pipeline found (``"new"``) or refined (``"updated"``).

    ``fixation_wall_ns`` is the wall-clock time (``time.time_ns``) when the fixation that produced
    it completed; the browser subtracts it from the moment it draws the lesion.
    """

    kind: str
    lesion: Lesion
    fixation_wall_ns: int


class LiveGlance(Protocol):
    """One photograph's live glance session (the pipeline, or an adapter over it)."""

    def push(self, sample: GazeSample) -> list[LesionEvent]:
        """Feed one gaze sample in image px; return the lesion events it caused."""

    def prompt(self, x: float, y: float) -> Optional[Lesion]:
        """Prompt the model at an image point (a missed MA the clinician tapped)."""

    def close(self) -> None:
        """Release resources."""


def display_px_per_deg(config: Config) -> float:
    """Screen px per degree of visual angle from the configured display geometry."""
    d = config.display
    px_per_mm = d.width_px / d.width_mm
    return float(d.viewing_distance_mm * math.tan(math.radians(1.0)) * px_per_mm)


def read_gaze_csv(raw: bytes) -> list[GazeSample]:
    """Parse a gaze CSV in image coordinates (``timestamp_ns,x,y[,worn,px_per_deg]``).

    Raises
    ------
    ValueError
        If the header lacks the required columns or a row is malformed.
    """
    try:
        from appliance.gaze.csv_replay import read_gaze_csv as real  # type: ignore[attr-defined]
    except ImportError:
        real = None
    if real is not None:
        return list(real(io.StringIO(raw.decode("utf-8"))))
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8", errors="strict")))
    if not reader.fieldnames or not {"timestamp_ns", "x", "y"} <= set(reader.fieldnames):
        raise ValueError("A gaze recording needs the columns timestamp_ns, x and y.")
    out = []
    for n, row in enumerate(reader, start=2):
        try:
            x = float(row["x"]) if row["x"] not in ("", None) else math.nan
            y = float(row["y"]) if row["y"] not in ("", None) else math.nan
            ppd = float(row["px_per_deg"]) if row.get("px_per_deg") not in ("", None) else math.nan
            out.append(GazeSample(int(row["timestamp_ns"]), x, y, row.get("worn", "1") not in ("0",), ppd))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Line {n} of the gaze recording is not valid.") from exc
    return out


def standin_quality(rgb: np.ndarray) -> bool:
    """SWAP for ``appliance.imaging.quality``: too dark, too bright or too blurred -> ungradable."""
    import cv2

    green = rgb[:, :, 1]
    fov = green > 10
    if fov.mean() < 0.05:
        return False
    mean = float(green[fov].mean())
    sharp = float(cv2.Laplacian(green, cv2.CV_32F).var())
    return 20.0 <= mean <= 235.0 and sharp >= 2.0


def _quality_default() -> Callable[[np.ndarray], bool]:
    try:
        from appliance.imaging.quality import is_gradable  # type: ignore[attr-defined]
    except ImportError:
        return standin_quality
    return is_gradable


def apriltag_png(marker_id: int, size_px: int = 240) -> bytes:
    """Render AprilTag 36h11 marker ``marker_id`` as PNG (with its white quiet zone).

    SWAP for the Neon helper's ``screen_mapping`` marker images when present.
    """
    import cv2

    try:
        from appliance.gaze.screen_mapping import marker_png  # type: ignore[attr-defined]
    except ImportError:
        marker_png = None
    if marker_png is not None:
        return marker_png(marker_id)
    dictionary = cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_APRILTAG_36h11)
    tag = cv2.aruco.generateImageMarker(dictionary, marker_id, size_px * 8 // 10)
    pad = size_px // 10
    tag = cv2.copyMakeBorder(tag, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
    ok, buf = cv2.imencode(".png", tag)
    return buf.tobytes()


def model_info_default(config: Config) -> dict[str, str]:
    """Model name, version and the sha256 of ``manifest.json`` of the model folder in force.

    Uses ``appliance.glance.modelfiles`` (an installed model update wins over the committed
    one); a missing or broken manifest is reported, not raised: the Device page must still open.
    """
    info = {"name": config.model.name, "variant": config.model.variant, "version": "unknown", "sha256": "missing"}
    try:
        from appliance.errors import ModelError
        from appliance.glance.modelfiles import load_for_config
    except ImportError:
        return info
    try:
        files = load_for_config(config)
    except ModelError as exc:
        info["error"] = str(exc)
        return info
    manifest = files.manifest
    info.update(name=str(manifest.get("name", info["name"])), sha256=files.manifest_sha256,
                version=str(manifest.get("version", "unknown")))
    return info


@dataclass
class Services:
    """The parts of the appliance the UI calls. Every field has a working default.

    Attributes
    ----------
    load_photograph
        ``(bytes, ImagingConfig, name) -> Photograph``; validates and decodes.
    is_gradable
        ``rgb -> bool``; False flags a photograph for a retake.
    live_factory
        ``(rgb, config) -> LiveGlance`` for the reader.
    read_gaze_csv
        ``bytes -> list[GazeSample]`` for "Replay gaze".
    pointer_push
        ``(x_screen, y_screen, t_ns)`` of the pointer gaze source, or None.
    tracker_status
        ``() -> SourceStatus`` of the gaze source in use.
    marker_png
        ``marker_id -> PNG bytes`` for the AprilTags at the screen corners.
    sync_status, sync_now
        ``() -> dict`` with pending / last_success / errors; ``() -> str`` starts a pass.
    model_info
        ``() -> dict`` with name, version, sha256.
    study_store
        ``(conn, data_dir) -> StudyStore``-like object (SWAP for ``appliance.store``).
    """

    config: Config
    load_photograph: Callable[..., Any] = None  # type: ignore[assignment]
    is_gradable: Callable[[np.ndarray], bool] = field(default_factory=_quality_default)
    live_factory: Callable[[np.ndarray, Config], LiveGlance] = None  # type: ignore[assignment]
    read_gaze_csv: Callable[[bytes], list[GazeSample]] = read_gaze_csv
    pointer_push: Optional[Callable[[float, float, int], None]] = None
    tracker_status: Callable[[], SourceStatus] = None  # type: ignore[assignment]
    marker_png: Callable[[int], bytes] = apriltag_png
    sync_status: Callable[[], dict[str, Any]] = None  # type: ignore[assignment]
    sync_now: Callable[[], str] = None  # type: ignore[assignment]
    model_info: Callable[[], dict[str, str]] = None  # type: ignore[assignment]
    study_store: Callable[..., Any] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        cfg = self.config
        if self.load_photograph is None:
            from appliance.imaging.io import load_photograph

            self.load_photograph = load_photograph
        if self.live_factory is None:
            self.live_factory = _live_factory_default
        if self.tracker_status is None:
            self.tracker_status = lambda: SourceStatus(kind=cfg.gaze.source, connected=cfg.gaze.source == "pointer")
        if self.sync_status is None:
            self.sync_status = lambda: {"available": False, "pending": None, "last_success": None, "errors": []}
        if self.sync_now is None:
            self.sync_now = lambda: "The sync service is not running on this appliance."
        if self.model_info is None:
            self.model_info = lambda: model_info_default(cfg)
        if self.study_store is None:
            from appliance.ui.studies import StudyStore

            self.study_store = StudyStore

    def disk_free_mb(self) -> float:
        """float: free space in the data folder, MiB."""
        path = self.config.data_dir
        while not path.exists() and path != path.parent:
            path = path.parent
        return shutil.disk_usage(path).free / 2 ** 20


def _live_factory_default(rgb: np.ndarray, config: Config) -> LiveGlance:
    """The real live pipeline when importable, else the UI's stand-in (SWAP)."""
    try:
        from appliance.glance.live import open_live_session  # type: ignore[attr-defined]
    except ImportError:
        open_live_session = None
    if open_live_session is not None:
        return open_live_session(rgb, config)
    # The photograph fitted to the screen: image px per degree = screen px per degree / fit scale.
    fit = min(config.display.width_px / rgb.shape[1], config.display.height_px / rgb.shape[0])
    image_ppd = display_px_per_deg(config) / fit
    try:
        from appliance.ui.engine_live import EngineLiveGlance

        import appliance.glance.engine  # noqa: F401  (the engine may still be incomplete)
    except ImportError as exc:
        logger.warning("glance engine not importable (%s); the reader uses the UI's stand-in", exc)
    else:
        return EngineLiveGlance(rgb, config, image_ppd)
    return standin_live_factory(rgb, config)


def standin_live_factory(rgb: np.ndarray, config: Config) -> LiveGlance:
    """The UI's stand-in live glance (SWAP): tests of the UI itself pin it for determinism."""
    from appliance.ui.standin_glance import StandInGlance

    fit = min(config.display.width_px / rgb.shape[1], config.display.height_px / rgb.shape[0])
    return StandInGlance(rgb, display_px_per_deg(config) / fit, config.gaze.fixation_min_ms,
                         config.gaze.fixation_dispersion_deg)


def build_services(config: Config, store: Optional[Any] = None, scheduler: Optional[Any] = None,
                   **overrides: Any) -> Services:
    """Build the services ``glanceseg serve`` uses.

    Parameters
    ----------
    config
        The configuration.
    store
        An ``appliance.store.store.Store``: the Sync page then shows its outbox.
    scheduler
        An ``appliance.sync.scheduler.SyncScheduler``: "Sync now" triggers it.
    overrides
        Any other :class:`Services` field (e.g. ``pointer_push``, ``tracker_status``).
    """
    from appliance.ui.sync_panel import scheduler_sync_now, store_sync_status

    if store is not None:
        overrides.setdefault("sync_status", store_sync_status(store, scheduler))
    if scheduler is not None:
        overrides.setdefault("sync_now", scheduler_sync_now(scheduler))
    return Services(config=config, **overrides)
