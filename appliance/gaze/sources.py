"""Build the configured gaze source, and the gaze settings objects, from the Config.

One explicit registry dict (``SOURCE_BUILDERS``) maps ``[gaze] source`` to a builder,
so the set of sources is visible in one place and a misspelt name fails with the list
of valid ones. Heavy or optional imports (the Pupil Labs client for ``neon``) happen
inside the builder, so a laptop without them can still use every other source.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Optional

from appliance.config import Config
from appliance.errors import ConfigError
from appliance.gaze.base import GazeSource
from appliance.gaze.fixations import FixationParams
from appliance.gaze.geometry import ViewTransform, default_image_px_per_deg, screen_px_per_deg
from appliance.gaze.heatmap import HeatmapParams

logger = logging.getLogger(__name__)

Builder = Callable[..., GazeSource]


def fixation_params(config: Config) -> FixationParams:
    """Return the I-DT settings of ``[gaze]``."""
    g = config.gaze
    return FixationParams(dispersion_deg=g.fixation_dispersion_deg, min_duration_ms=g.fixation_min_ms,
                          max_gap_ms=g.fixation_max_gap_ms, clock_jump_ms=g.fixation_clock_jump_ms)


def heatmap_params(config: Config) -> HeatmapParams:
    """Return the heat-map settings of ``[gaze]``."""
    return HeatmapParams(sigma_deg=config.gaze.heatmap_sigma_deg, cell_px=config.gaze.heatmap_cell_px)


def _require_image_size(kind: str, image_size: Optional[tuple[int, int]]) -> tuple[int, int]:
    if image_size is None:
        raise ValueError(f"The {kind} gaze source needs the photograph's image_size (width, height).")
    return image_size


def _view(config: Config, image_size: tuple[int, int], view: Optional[ViewTransform]) -> ViewTransform:
    return view or ViewTransform.fitted(image_size[0], image_size[1], config.display)


def _replay_path(config: Config, path: Optional[Path]) -> Path:
    chosen = path or (Path(config.gaze.replay_path) if config.gaze.replay_path else None)
    if chosen is None:
        raise ConfigError(f"[gaze] source = {config.gaze.source!r} needs [gaze] replay_path.")
    return chosen


def _build_pointer(config: Config, image_size: Optional[tuple[int, int]] = None,
                   view: Optional[ViewTransform] = None, **_: Any) -> GazeSource:
    from appliance.gaze.pointer import PointerSource

    size = _require_image_size("pointer", image_size)
    return PointerSource(_view(config, size, view), screen_px_per_deg(config.display),
                         maxlen=config.gaze.pointer_queue_size)


def _build_csv(config: Config, image_size: Optional[tuple[int, int]] = None,
               path: Optional[Path] = None, **_: Any) -> GazeSource:
    from appliance.gaze.csv_replay import CsvReplaySource

    default_ppd = default_image_px_per_deg(*image_size, config.display) if image_size else math.nan
    return CsvReplaySource(_replay_path(config, path), default_px_per_deg=default_ppd,
                           speed=config.gaze.replay_speed)


def _build_pupil_export(config: Config, image_size: Optional[tuple[int, int]] = None,
                        path: Optional[Path] = None, view: Optional[ViewTransform] = None,
                        mapping: Any = None, **_: Any) -> GazeSource:
    from appliance.gaze.pupil_export import PupilExportSource, load_screen_mapping

    size = _require_image_size("pupil_export", image_size)
    if mapping is None:
        if not config.gaze.screen_mapping_path:
            raise ConfigError("[gaze] source = 'pupil_export' needs [gaze] screen_mapping_path.")
        mapping = load_screen_mapping(config.gaze.screen_mapping_path)
    return PupilExportSource(_replay_path(config, path), mapping, _view(config, size, view),
                             screen_px_per_deg(config.display), speed=config.gaze.replay_speed)


def _build_simulated(config: Config, image_size: Optional[tuple[int, int]] = None,
                     mas: Any = (), seed: Optional[int] = None, fov: Any = None, **_: Any) -> GazeSource:
    from appliance.gaze.simulated import ReaderParams, SimulatedSource, simulate_reading

    width, height = _require_image_size("simulated", image_size)
    reading = simulate_reading(
        width, height, mas, ReaderParams(display=config.display),
        seed=config.gaze.simulated_seed if seed is None else seed,
        fov_center_xy=getattr(fov, "center_xy", None), fov_radius_px=getattr(fov, "radius_px", None),
        fov_mask=getattr(fov, "mask", None))
    return SimulatedSource(reading, speed=config.gaze.replay_speed)


def _build_neon(config: Config, to_image: Any = None, frame_sink: Any = None, **_: Any) -> GazeSource:
    from appliance.gaze.neon import NeonGazeSource  # needs pupil-labs-realtime-api

    return NeonGazeSource(config.tracker, to_image=to_image, frame_sink=frame_sink)


SOURCE_BUILDERS: dict[str, Builder] = {
    "pointer": _build_pointer,
    "csv": _build_csv,
    "pupil_export": _build_pupil_export,
    "simulated": _build_simulated,
    "neon": _build_neon,
}


def build_source(config: Config, kind: Optional[str] = None, **kwargs: Any) -> GazeSource:
    """Build a gaze source.

    Parameters
    ----------
    config
        The appliance configuration (``[gaze]``, ``[display]``, ``[tracker]``).
    kind
        Overrides ``[gaze] source``.
    **kwargs
        Per-source inputs: ``image_size`` (width, height) for every source working in
        image px, ``view`` (a ViewTransform; the fitted view by default), ``path``
        (replays; else ``[gaze] replay_path``), ``mapping`` (a ScreenMapping for
        ``pupil_export``), ``mas``, ``seed`` and ``fov`` for ``simulated``, ``to_image``
        and ``frame_sink`` for ``neon``. Inputs a source does not use are ignored.

    Raises
    ------
    ConfigError
        If the kind is unknown or a required setting is missing.
    """
    name = kind or config.gaze.source
    try:
        builder = SOURCE_BUILDERS[name]
    except KeyError:
        raise ConfigError(f"Unknown gaze source {name!r}; choose one of "
                          f"{', '.join(sorted(SOURCE_BUILDERS))}.") from None
    source = builder(config, **kwargs)
    logger.info("gaze source: %s", name)
    return source
