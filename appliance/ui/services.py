"""What the UI needs from the rest of the appliance, bundled so the app factory stays testable.

``create_app(config, services)`` takes a :class:`Services`; ``glanceseg serve`` builds real ones
with :func:`build_services`. Each field is a small callable or factory, so a test (or the lead,
when wiring) can replace one part without touching the others. The real parts: the local store
(:mod:`appliance.store`), the glance engine and live pipeline (:mod:`appliance.glance`), the gaze
sources and screen markers (:mod:`appliance.gaze`).
"""

from __future__ import annotations

import io
import logging
import math
import shutil
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

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
    """One photograph's live glance session (:class:`appliance.ui.engine_live.EngineLiveGlance`).

    Optional: ``tick(now_ns)`` and ``flush()`` (end a quiet or finished stream's fixation) and
    ``set_sink(callback)`` (deliver events as the pipeline emits them; see :mod:`appliance.ui.live`).
    """

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
    """Parse an uploaded gaze CSV in image px with :func:`appliance.gaze.csv_replay.read_gaze_csv`.

    Raises
    ------
    GazeError
        If the header lacks the required columns or a row is malformed.
    """
    from appliance.gaze.csv_replay import read_gaze_csv as read

    return list(read(io.StringIO(raw.decode("utf-8"))))


def marker_png_default(config: Config) -> Callable[[int], bytes]:
    """``marker_id -> PNG`` of the corner markers exactly as :func:`screen_markers` lays them out."""
    from appliance.gaze.screen_mapping import screen_markers

    d, t = config.display, config.tracker
    placements = {m.marker_id: m for m in screen_markers(d.width_px, d.height_px, t.marker_size_px, t.marker_margin_px)}
    return lambda marker_id: placements[marker_id].png()


_ENGINES: dict[int, Any] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(config: Config) -> Any:
    """The process's :class:`GlanceEngine` for ``config`` (saliency only when the model is missing)."""
    from appliance.errors import ModelError
    from appliance.glance.engine import GlanceEngine

    with _ENGINES_LOCK:
        engine = _ENGINES.get(id(config))
        if engine is None:
            try:
                engine = GlanceEngine.from_config(config)
            except ModelError as exc:
                logger.warning("model unavailable, lesions from saliency only: %s", exc)
                engine = GlanceEngine.from_config(config, use_model=False)
            _ENGINES[id(config)] = engine
        return engine


def model_info_default(config: Config) -> dict[str, str]:
    """Model name, version and the sha256 of ``manifest.json`` of the model folder in force.

    Uses ``appliance.glance.modelfiles`` (an installed model update wins over the committed
    one); a missing or broken manifest is reported, not raised: the Device page must still open.
    """
    info = {"name": config.model.name, "variant": config.model.variant, "version": "unknown", "sha256": "missing"}
    try:
        from appliance.errors import ModelError
        from appliance.glance.modelfiles import load_for_config
        from appliance.glance.runtime.onnx import configured_providers, resolve_variant
    except ImportError:
        return info
    try:  # "auto" shown as what it resolves to on this box
        info["variant"] = resolve_variant(config.model, configured_providers(config.model))
    except (ValueError, ImportError) as exc:  # an unknown provider name in the config; no onnxruntime
        info["error"] = str(exc)
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
    store
        The :class:`appliance.store.Store` (built on ``config`` when None).
    engine
        The :class:`appliance.glance.engine.GlanceEngine` for imports and the reader
        (:func:`shared_engine` on first use when None; tests pass a saliency-only one).
    load_photograph
        ``(bytes | Path, ImagingConfig, name) -> Photograph``; validates and decodes.
    live_factory
        ``(photo, services) -> LiveGlance`` for the reader.
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
    """

    config: Config
    store: Any = None
    engine: Any = None
    load_photograph: Callable[..., Any] = None  # type: ignore[assignment]
    live_factory: Callable[[Any, "Services"], LiveGlance] = None  # type: ignore[assignment]
    read_gaze_csv: Callable[[bytes], list[GazeSample]] = read_gaze_csv
    pointer_push: Optional[Callable[[float, float, int], None]] = None
    tracker_status: Callable[[], SourceStatus] = None  # type: ignore[assignment]
    marker_png: Callable[[int], bytes] = None  # type: ignore[assignment]
    sync_status: Callable[[], dict[str, Any]] = None  # type: ignore[assignment]
    sync_now: Callable[[], str] = None  # type: ignore[assignment]
    model_info: Callable[[], dict[str, str]] = None  # type: ignore[assignment]
    analysis: Any = field(default=None, repr=False)
    #: The background sync (``SyncScheduler``) when one runs: stopped with the services, so its
    #: status panel turns its LEDs off instead of showing "ready" for a station that is down.
    scheduler: Any = field(default=None, repr=False)
    #: The status panel of a station without a scheduler (``OfflinePanel``), stopped likewise.
    panel: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        cfg = self.config
        if self.store is None:
            from appliance.store import Store

            self.store = Store(cfg)
        if self.load_photograph is None:
            from appliance.imaging.io import load_photograph

            self.load_photograph = load_photograph
        if self.live_factory is None:
            from appliance.ui.engine_live import EngineLiveGlance

            self.live_factory = EngineLiveGlance.for_services
        if self.tracker_status is None:
            self.tracker_status = lambda: SourceStatus(kind=cfg.gaze.source, connected=cfg.gaze.source == "pointer")
        if self.marker_png is None:
            self.marker_png = marker_png_default(cfg)
        if self.sync_status is None:
            from appliance.ui.sync_panel import store_sync_status

            self.sync_status = store_sync_status(self.store, None)
        if self.sync_now is None:
            self.sync_now = lambda: "The sync service is not running on this appliance."
        if self.model_info is None:
            self.model_info = lambda: model_info_default(cfg)
        if self.analysis is None:
            from appliance.ui.analysis import AnalysisQueue

            self.analysis = AnalysisQueue(self.store, self.get_engine, spool=cfg.data_dir / "import-queue")
            self.analysis.resume(lambda raw, name: self.load_photograph(raw, cfg.imaging, name=name))

    def get_engine(self) -> Any:
        """The glance engine (built on first use: loading the model takes seconds)."""
        if self.engine is None:
            self.engine = shared_engine(self.config)
        return self.engine

    def live_snapshot(self) -> dict[str, Any]:
        """What only the serving process knows, for ``glanceseg status`` (:mod:`appliance.ui.live_state`).

        ``model.sha256`` is the manifest the engine loaded ("" without a model), None while no
        photograph has made it load one yet.
        """
        tracker = self.tracker_status()
        engine = self.engine
        return {"tracker": {"kind": tracker.kind, "connected": bool(tracker.connected)},
                "model": {"sha256": engine.model_sha256 if engine is not None else None}}

    def studies(self) -> Any:
        """The UI's view of the store (:class:`appliance.ui.studies.StoreStudies`)."""
        from appliance.ui.studies import StoreStudies

        return StoreStudies(self.store)

    def disk_free_mb(self) -> float:
        """float: free space in the data folder, MiB."""
        path = self.config.data_dir
        while not path.exists() and path != path.parent:
            path = path.parent
        return shutil.disk_usage(path).free / 2 ** 20

    def close(self) -> None:
        """Stop the analysis worker and the background sync (the store is closed by whoever opened it)."""
        self.analysis.close()
        for background in (self.scheduler, self.panel):
            if background is not None:
                background.stop()


def build_services(config: Config, store: Optional[Any] = None, scheduler: Optional[Any] = None,
                   **overrides: Any) -> Services:
    """Build the services ``glanceseg serve`` uses.

    Parameters
    ----------
    config
        The configuration.
    store
        An ``appliance.store.Store`` (one is opened on ``config`` when None).
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
    return Services(config=config, store=store, scheduler=scheduler, **overrides)
