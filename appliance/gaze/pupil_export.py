"""Replay of a Pupil Labs Neon / Pupil Cloud export (``gaze.csv`` or ``fixations.csv``).

The export's gaze is in *scene-camera* px. Two steps bring it to image px:

1. scene -> screen: a 3x3 homography, fixed (a calibration) or recorded over time (one
   per scene frame, e.g. from screen markers); the latest one at or before a sample's
   timestamp applies, and a sample before the first, or while the screen was not found
   (a null entry), has no gaze. Any object with ``map(timestamp_ns, x, y) -> (x, y) or
   None`` (the live :class:`appliance.gaze.screen_mapping.ScreenMapper`) serves too;
2. screen -> image: the viewer's :class:`~appliance.gaze.geometry.ViewTransform`, fixed
   or recorded (zoom and pan changes), which also gives ``px_per_deg``.

Column names are those of the Neon Player / Pupil Cloud "Timeseries" export:
``gaze.csv``: ``timestamp [ns]``, ``gaze x [px]``, ``gaze y [px]``, ``worn`` (1.0 / 0.0),
``blink id`` (set during a blink), among others; ``fixations.csv``: ``start timestamp
[ns]``, ``end timestamp [ns]``, ``fixation x [px]``, ``fixation y [px]``. A fixations-only
export is replayed as samples at ``sample_rate_hz`` across each fixation, with one empty
sample between fixations so the detector never merges two.

Mapping file (JSON) read by :func:`load_screen_mapping`: either
``{"homography": [[...], [...], [...]]}`` or ``{"homographies": [{"timestamp_ns": T,
"homography": [[...]] or null}, ...]}``.
"""

from __future__ import annotations

import bisect
import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from appliance.errors import GazeError
from appliance.gaze.base import GazeSample
from appliance.gaze.geometry import ViewTransform
from appliance.gaze.replay import SampleReplay

logger = logging.getLogger(__name__)

GAZE_TS, GAZE_X, GAZE_Y, WORN, BLINK = "timestamp [ns]", "gaze x [px]", "gaze y [px]", "worn", "blink id"
FIX_START, FIX_END, FIX_X, FIX_Y = ("start timestamp [ns]", "end timestamp [ns]",
                                    "fixation x [px]", "fixation y [px]")

PathLike = Union[str, Path]
MappingLike = Any  # ScreenMapping, or an object with map(timestamp_ns, x, y) -> (x, y) | None


def _matrix(value: object, where: str) -> np.ndarray:
    h = np.asarray(value, dtype=float)
    if h.shape != (3, 3) or not np.all(np.isfinite(h)):
        raise GazeError(f"{where}: a homography must be a finite 3x3 matrix.")
    return h


@dataclass(frozen=True)
class ScreenMapping:
    """Scene-camera px -> screen px homographies over time.

    Attributes
    ----------
    timestamps_ns
        Sorted start times; a fixed mapping has one entry at ``-inf`` (as the minimum int).
    homographies
        One 3x3 matrix (or None: screen not found) per timestamp.
    """

    timestamps_ns: tuple[int, ...]
    homographies: tuple[Optional[np.ndarray], ...]

    @classmethod
    def fixed(cls, homography: Sequence[Sequence[float]]) -> "ScreenMapping":
        """Return a mapping that never changes."""
        return cls((-(2 ** 63),), (_matrix(homography, "fixed mapping"),))

    @classmethod
    def recorded(cls, entries: Sequence[tuple[int, Optional[Sequence[Sequence[float]]]]]) -> "ScreenMapping":
        """Return a mapping from ``(timestamp_ns, homography or None)`` entries (any order)."""
        ordered = sorted(entries, key=lambda e: e[0])
        return cls(tuple(int(t) for t, _ in ordered),
                   tuple(None if h is None else _matrix(h, f"mapping at {t}") for t, h in ordered))

    def at(self, timestamp_ns: int) -> Optional[np.ndarray]:
        """Return the homography in force at ``timestamp_ns``, or None."""
        i = bisect.bisect_right(self.timestamps_ns, timestamp_ns) - 1
        return None if i < 0 else self.homographies[i]

    def to_screen(self, timestamp_ns: int, x: float, y: float) -> tuple[float, float]:
        """Map a scene-camera point to screen px; NaN when no mapping applies."""
        h = self.at(timestamp_ns)
        if h is None or not (math.isfinite(x) and math.isfinite(y)):
            return (math.nan, math.nan)
        v = h @ np.array([x, y, 1.0])
        if abs(v[2]) < 1e-12:
            return (math.nan, math.nan)
        return (float(v[0] / v[2]), float(v[1] / v[2]))


def load_screen_mapping(path: PathLike) -> ScreenMapping:
    """Read a mapping JSON file (see the module docstring).

    Raises
    ------
    GazeError
        If the file is missing, not JSON, or holds no valid homography.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GazeError(f"Cannot read screen mapping {path}: {exc}.") from exc
    if isinstance(data, dict) and "homography" in data:
        return ScreenMapping.fixed(data["homography"])
    if isinstance(data, dict) and isinstance(data.get("homographies"), list):
        try:
            return ScreenMapping.recorded([(int(e["timestamp_ns"]), e.get("homography"))
                                           for e in data["homographies"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise GazeError(f"Screen mapping {path.name}: each entry needs timestamp_ns and homography.") from exc
    raise GazeError(f"Screen mapping {path.name} holds neither 'homography' nor 'homographies'.")


@dataclass(frozen=True)
class ViewTimeline:
    """The viewer's transform over time: ``(timestamp_ns, ViewTransform)``, sorted."""

    entries: tuple[tuple[int, ViewTransform], ...]

    def __post_init__(self) -> None:
        if not self.entries:
            raise ValueError("A view timeline needs at least one view.")
        ordered = tuple(sorted(self.entries, key=lambda e: e[0]))
        object.__setattr__(self, "entries", ordered)
        object.__setattr__(self, "_keys", tuple(t for t, _ in ordered))

    @classmethod
    def fixed(cls, view: ViewTransform) -> "ViewTimeline":
        """Return a timeline with one view for the whole recording."""
        return cls(((-(2 ** 63), view),))

    def at(self, timestamp_ns: int) -> ViewTransform:
        """Return the view in force at ``timestamp_ns`` (the first one before it starts)."""
        i = max(0, bisect.bisect_right(self._keys, timestamp_ns) - 1)  # type: ignore[attr-defined]
        return self.entries[i][1]


def _rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise GazeError(f"{path.name} lacks the column(s) {', '.join(missing)}.")
            return list(reader)
    except OSError as exc:
        raise GazeError(f"Cannot read {path}: {exc.strerror or exc}.") from exc


def _num(text: Optional[str]) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _to_image(t: int, sx: float, sy: float, mapping: "MappingLike", views: ViewTimeline,
              screen_ppd: float) -> tuple[float, float, float]:
    """Scene px -> image px and image px per degree; NaN gaze when off screen."""
    view = views.at(t)
    ppd = view.image_px_per_deg(screen_ppd)
    if isinstance(mapping, ScreenMapping):
        x_s, y_s = mapping.to_screen(t, sx, sy)
    else:  # a live mapper with map(t, x, y) -> (x, y) | None, e.g. screen_mapping.ScreenMapper
        mapped = mapping.map(t, sx, sy) if math.isfinite(sx) and math.isfinite(sy) else None
        x_s, y_s = mapped if mapped is not None else (math.nan, math.nan)
    if not (math.isfinite(x_s) and math.isfinite(y_s)) or not view.on_screen(x_s, y_s):
        return (math.nan, math.nan, ppd)
    x_i, y_i = view.screen_to_image(x_s, y_s)
    return (float(x_i), float(y_i), ppd)


def read_pupil_gaze(path: PathLike, mapping: "MappingLike", views: ViewTimeline,
                    screen_px_per_degree: float) -> list[GazeSample]:
    """Read an export's ``gaze.csv`` and map it to image px.

    Rows that cannot be parsed (no timestamp) are skipped and logged; a row in a blink,
    off screen or without a mapping becomes a sample with NaN gaze.
    """
    path = Path(path)
    samples = []
    skipped = 0
    for row in _rows(path, (GAZE_TS, GAZE_X, GAZE_Y)):
        try:
            t = int(row[GAZE_TS])
        except (TypeError, ValueError):
            skipped += 1
            continue
        worn = _num(row.get(WORN)) != 0.0  # a missing column (NaN) means worn
        sx, sy = _num(row[GAZE_X]), _num(row[GAZE_Y])
        if (row.get(BLINK) or "").strip():
            sx = sy = math.nan
        x, y, ppd = _to_image(t, sx, sy, mapping, views, screen_px_per_degree)
        samples.append(GazeSample(t, x, y, worn, ppd))
    if skipped:
        logger.warning("%s: skipped %d rows without a valid timestamp", path.name, skipped)
    return samples


def read_pupil_fixations(path: PathLike, mapping: "MappingLike", views: ViewTimeline,
                         screen_px_per_degree: float, sample_rate_hz: float = 200.0) -> list[GazeSample]:
    """Read an export's ``fixations.csv`` and expand it into image-px samples.

    Each fixation becomes samples at ``sample_rate_hz`` from its start to its end at its
    mapped position (mapping and view taken at its start), followed by one no-gaze
    sample, so the fixation detector recovers each fixation whole and apart.
    """
    path = Path(path)
    step = int(round(1e9 / sample_rate_hz))
    samples: list[GazeSample] = []
    for row in _rows(path, (FIX_START, FIX_END, FIX_X, FIX_Y)):
        try:
            t0, t1 = int(row[FIX_START]), int(row[FIX_END])
        except (TypeError, ValueError):
            continue
        x, y, ppd = _to_image(t0, _num(row[FIX_X]), _num(row[FIX_Y]), mapping, views, screen_px_per_degree)
        for t in range(t0, t1 + 1, step):
            samples.append(GazeSample(t, x, y, True, ppd))
        samples.append(GazeSample(t1 + step, math.nan, math.nan, True, ppd))
    return samples


class PupilExportSource(SampleReplay):
    """Replay a Neon / Pupil Cloud export folder (``gaze.csv``, else ``fixations.csv``).

    Parameters
    ----------
    export_dir
        The recording's folder.
    mapping
        Scene -> screen homographies.
    views
        The viewer's transform (a :class:`ViewTransform` for a fixed view).
    screen_px_per_degree
        From the display geometry.
    speed
        None or 0 for as fast as possible, else real-time pacing times this factor.
    """

    kind = "pupil_export"

    def __init__(self, export_dir: PathLike, mapping: "MappingLike",
                 views: Union[ViewTimeline, ViewTransform], screen_px_per_degree: float,
                 speed: Optional[float] = None, **kwargs: object) -> None:
        folder = Path(export_dir)
        timeline = views if isinstance(views, ViewTimeline) else ViewTimeline.fixed(views)
        if (folder / "gaze.csv").is_file():
            samples = read_pupil_gaze(folder / "gaze.csv", mapping, timeline, screen_px_per_degree)
        elif (folder / "fixations.csv").is_file():
            samples = read_pupil_fixations(folder / "fixations.csv", mapping, timeline, screen_px_per_degree)
        else:
            raise GazeError(f"{folder} holds neither gaze.csv nor fixations.csv.")
        super().__init__(samples, speed=speed, **kwargs)  # type: ignore[arg-type]
