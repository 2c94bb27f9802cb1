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
``gaze.csv``: ``timestamp [ns]``, ``gaze x [px]``, ``gaze y [px]``, ``worn`` (1.0 / 0.0
from Pupil Cloud and Neon Player 5, True / False from Pupil Labs' ``pl-rec-export``, 255 / 0
from ``pl-neon-recording``), ``blink id`` (set during a blink), among others; blinks are
also read from a ``blinks.csv`` beside it (``start timestamp [ns]``, ``end timestamp
[ns]``), which exporters keep even when they leave ``blink id`` empty, since Neon's gaze
during a blink is erratic. ``fixations.csv``: ``start timestamp [ns]``, ``end timestamp
[ns]``, ``fixation x [px]``, ``fixation y [px]``. A fixations-only export is replayed as
samples at ``sample_rate_hz`` across each fixation, with one empty sample between
fixations so the detector never merges two. Timestamps must be integer nanoseconds: a
file re-saved by a spreadsheet (``1.636e+18``) has lost them and is refused.

Mapping file (JSON) read by :func:`load_screen_mapping`: either
``{"homography": [[...], [...], [...]]}`` or ``{"homographies": [{"timestamp_ns": T,
"homography": [[...]] or null}, ...]}``. Its homographies take the export's own scene px
(as in ``gaze.csv``: not undistorted) and its times are the export's clock (the Companion
device's UTC ns). The live :class:`~appliance.gaze.screen_mapping.ScreenMapper` works on
undistorted px in the appliance's clock instead; its recordings are not meant for this
replay (undistortion moves a point by 0.2° on average, 0.6° at most, less than the
tracker's own error, but the clocks differ by the measured offset).
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
#: Share of rows whose timestamp may fail to parse before the file is refused rather than thinned
#: (a spreadsheet's or pandas' round trip turns the whole column to floats; a stray row does not).
MAX_BAD_TIMESTAMP_SHARE = 0.5
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
                hint = (" This is a Neon Player 4 export; export again with Neon Player 5 or from Pupil Cloud."
                        if (path.parent / "gaze_positions.csv").is_file() else "")
                raise GazeError(f"{path.name} lacks the column(s) {', '.join(missing)}.{hint}")
            return list(reader)
    except OSError as exc:
        raise GazeError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    except (UnicodeError, csv.Error) as exc:
        raise GazeError(f"Cannot read {path.name}: {exc}. Expected a UTF-8 CSV as Pupil Cloud or "
                        "Neon Player export it (was it re-saved by a spreadsheet?).") from exc


def _num(text: Optional[str]) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _worn(text: Optional[str]) -> bool:
    """1.0 / 0.0, True / False or 255 / 0 (see the module docstring); empty or missing: worn."""
    value = (text or "").strip().lower()
    if value == "false":
        return False
    number = _num(value)
    return math.isnan(number) or number != 0.0


def _timestamps(rows: list[dict[str, str]], columns: Sequence[str], path: Path) -> list[Optional[tuple[int, ...]]]:
    """Each row's integer-ns timestamps in ``columns``, None where one does not parse.

    Raises
    ------
    GazeError
        When more than :data:`MAX_BAD_TIMESTAMP_SHARE` of the rows fail: then the file was
        not written by a Pupil Labs exporter as is (a spreadsheet turns the int64 ns into
        floats, which cannot hold them), and a thinned replay would pass for a real one.
    """
    out: list[Optional[tuple[int, ...]]] = []
    first_bad = None
    for row in rows:
        try:
            out.append(tuple(int(row[c]) for c in columns))
        except (TypeError, ValueError):
            out.append(None)
            first_bad = first_bad if first_bad is not None else row.get(columns[0])
    bad = sum(v is None for v in out)
    if bad and bad > MAX_BAD_TIMESTAMP_SHARE * len(rows):
        raise GazeError(f"{path.name}: {bad} of {len(rows)} rows have no integer timestamp in ns (the first: "
                        f"{first_bad!r}). Export again from Pupil Cloud or Neon Player; a file re-saved by a "
                        "spreadsheet has lost the nanoseconds.")
    if bad:
        logger.warning("%s: skipped %d rows without a valid timestamp", path.name, bad)
    return out


def _blinks(path: Path) -> list[tuple[int, int]]:
    """Blink intervals ``[start, end)`` in ns from ``blinks.csv``, sorted; [] when absent."""
    if not path.is_file():
        return []
    rows = _rows(path, (FIX_START, FIX_END))
    return sorted(v for v in _timestamps(rows, (FIX_START, FIX_END), path) if v is not None)  # type: ignore[misc]


def _in_blink(t: int, blinks: list[tuple[int, int]], starts: list[int]) -> bool:
    i = bisect.bisect_right(starts, t) - 1
    return i >= 0 and t < blinks[i][1]


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

    A few rows without a timestamp are skipped and logged (more refuse the file, see
    :func:`_timestamps`); a row in a blink (its ``blink id``, or an interval of
    ``blinks.csv`` beside it), off screen or without a mapping becomes a sample with NaN gaze.
    """
    path = Path(path)
    rows = _rows(path, (GAZE_TS, GAZE_X, GAZE_Y))
    blinks = _blinks(path.parent / "blinks.csv")
    starts = [b[0] for b in blinks]
    samples = []
    for row, ts in zip(rows, _timestamps(rows, (GAZE_TS,), path)):
        if ts is None:
            continue
        t = ts[0]
        sx, sy = _num(row[GAZE_X]), _num(row[GAZE_Y])
        if (row.get(BLINK) or "").strip() or (blinks and _in_blink(t, blinks, starts)):
            sx = sy = math.nan
        x, y, ppd = _to_image(t, sx, sy, mapping, views, screen_px_per_degree)
        samples.append(GazeSample(t, x, y, _worn(row.get(WORN)), ppd))
    return samples


def read_pupil_fixations(path: PathLike, mapping: "MappingLike", views: ViewTimeline,
                         screen_px_per_degree: float, sample_rate_hz: float = 200.0) -> list[GazeSample]:
    """Read an export's ``fixations.csv`` and expand it into image-px samples.

    Each fixation becomes samples at ``sample_rate_hz`` from its start to its exact end at
    its mapped position (mapping and view taken at its start), followed by one no-gaze
    sample before the next fixation starts, so the fixation detector recovers each fixation
    whole and apart, in time order.
    """
    path = Path(path)
    step = int(round(1e9 / sample_rate_hz))
    rows = _rows(path, (FIX_START, FIX_END, FIX_X, FIX_Y))
    fixations = sorted((ts, row) for ts, row in zip(_timestamps(rows, (FIX_START, FIX_END), path), rows)
                       if ts is not None and ts[1] >= ts[0])
    samples: list[GazeSample] = []
    for k, ((t0, t1), row) in enumerate(fixations):
        x, y, ppd = _to_image(t0, _num(row[FIX_X]), _num(row[FIX_Y]), mapping, views, screen_px_per_degree)
        times = list(range(t0, t1, step)) + [t1]
        samples.extend(GazeSample(t, x, y, True, ppd) for t in times)
        next_t0 = fixations[k + 1][0][0] if k + 1 < len(fixations) else t1 + step + 1
        gap_t = min(t1 + step, max(t1 + 1, next_t0 - 1))
        samples.append(GazeSample(gap_t, math.nan, math.nan, True, ppd))
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
