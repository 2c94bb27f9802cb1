"""The gaze CSV contract (image coordinates): reader, writer and replay source.

Header ``timestamp_ns,x,y,worn,px_per_deg``; only ``timestamp_ns,x,y`` are required.
One sample a row, sorted by time. An empty ``x`` or ``y`` marks a sample with no gaze
(blink, track loss); ``worn`` is 1 or 0 and defaults to 1; ``px_per_deg`` is image px per
degree at that moment and defaults to the caller's value (the ``--px-per-deg`` option or
the configured display geometry with the photograph fitted to the screen).

The reader is strict about the *file* (missing columns, unparsable numbers raise
:class:`~appliance.errors.GazeError` with the line number, because a broken file is a
user error worth reporting) but not about the *samples*: unsorted timestamps, samples
off the image and the like are passed through for the fixation detector to drop and
count.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from pathlib import Path
from typing import Iterable, Optional, TextIO, Union

from appliance.errors import GazeError
from appliance.gaze.base import GazeSample
from appliance.gaze.replay import SampleReplay

logger = logging.getLogger(__name__)

COLUMNS = ("timestamp_ns", "x", "y", "worn", "px_per_deg")
REQUIRED = ("timestamp_ns", "x", "y")

PathLike = Union[str, Path]
#: Smallest median step between consecutive rows that nanosecond timestamps can have: 0.1 ms,
#: ten times a 1 kHz tracker's. Seconds, milliseconds or microseconds all fall below it.
MIN_MEDIAN_STEP_NS = 100_000
#: Rows needed before the step is judged (a file of a few samples says little).
MIN_ROWS_FOR_STEP = 20


def _parse_float(text: str, where: str) -> float:
    text = text.strip()
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError as exc:
        hint = ""
        if re.fullmatch(r"[+-]?\d*,\d+", text):
            hint = f" Decimals are written with a point ({text.replace(',', '.')}), not a comma."
        raise GazeError(f"{where}: {text!r} is not a number.{hint}") from exc


def _parse_timestamp(text: str, where: str) -> int:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError as exc:
            raise GazeError(f"{where}: timestamp {text!r} is not an integer number of ns.") from exc
        if not math.isfinite(value):
            raise GazeError(f"{where}: timestamp {text!r} is not finite.")
        return int(round(value))


def _parse_worn(text: str, where: str) -> bool:
    text = text.strip().lower()
    if text in ("", "1", "1.0", "true"):
        return True
    if text in ("0", "0.0", "false"):
        return False
    raise GazeError(f"{where}: worn must be 1 or 0, not {text!r}.")


def read_gaze_csv(path: Union[PathLike, TextIO], default_px_per_deg: float = math.nan) -> list[GazeSample]:
    """Read a gaze CSV in image coordinates.

    Parameters
    ----------
    path
        The CSV file, or an open text stream (an upload held in memory).
    default_px_per_deg
        Image px per degree for rows without a ``px_per_deg`` value (NaN leaves the
        choice to the consumer).

    Returns
    -------
    list[GazeSample]
        Samples in file order; x and y NaN where the row has no gaze.

    Raises
    ------
    GazeError
        If the file cannot be read, lacks a required column, or a value is not a number.
        A bad last row alone is left out with a warning: it is what a recorder that lost
        power mid-write leaves.
    """
    if hasattr(path, "read"):
        name = getattr(path, "name", "gaze CSV") if isinstance(getattr(path, "name", None), str) else "gaze CSV"
        samples = _read_rows(path, name, default_px_per_deg)  # type: ignore[arg-type]
    else:
        path = Path(path)  # type: ignore[arg-type]
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                samples = _read_rows(fh, path.name, default_px_per_deg)
        except OSError as exc:
            raise GazeError(f"Cannot read gaze CSV {path}: {exc.strerror or exc}.") from exc
        name = path.name
    _check_time_unit(samples, name)
    logger.info("read %d gaze samples from %s", len(samples), name)
    return samples


def _check_time_unit(samples: list[GazeSample], name: str) -> None:
    """Refuse timestamps that cannot be nanoseconds.

    Why: a recording written in seconds (or ms, or µs) reads as a whole reading squeezed into
    a few nanoseconds. No fixation then lasts its minimum duration, and the result would be an
    empty lesion list with no word of why. One clock jump or gap does not move the median,
    and repeated timestamps (a writer that logs some samples twice) are not steps.
    """
    if len(samples) < MIN_ROWS_FOR_STEP:
        return
    steps = sorted(abs(b.timestamp_ns - a.timestamp_ns) for a, b in zip(samples, samples[1:]))
    steps = [s for s in steps if s] or [0]
    median = steps[len(steps) // 2]
    if median < MIN_MEDIAN_STEP_NS:
        raise GazeError(
            f"Gaze CSV {name}: consecutive samples are a median {median} ns apart, but timestamp_ns must "
            "be nanoseconds (a 200 Hz tracker steps 5000000 ns). Were the times written in seconds, "
            "milliseconds or microseconds? Multiply them to nanoseconds.")


def _parse_row(row: dict, where: str, default_px_per_deg: float) -> GazeSample:
    ppd = _parse_float(row.get("px_per_deg") or "", where)
    return GazeSample(
        timestamp_ns=_parse_timestamp(row.get("timestamp_ns") or "", where),
        x=_parse_float(row.get("x") or "", where),
        y=_parse_float(row.get("y") or "", where),
        worn=_parse_worn(row.get("worn") or "", where),
        px_per_deg=ppd if math.isfinite(ppd) else default_px_per_deg,
    )


def _header_error(name: str, header: list[str], missing: list[str]) -> str:
    """Say why the header lacks a required column, naming a wrong separator when that is why.

    Why: a spreadsheet export in a locale with decimal commas separates its columns with ';'
    (or a tab), and "lacks the column(s) timestamp_ns, x, y" alone, next to a header that
    plainly holds them, left the user guessing.
    """
    if not any(header):
        return f"Gaze CSV {name} is empty: it has no header line ({','.join(COLUMNS)})."
    joined = ",".join(header)
    for sep, word in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
        if all(c in joined.split(sep) for c in REQUIRED):
            return (f"Gaze CSV {name} separates its columns with {word}; the gaze CSV separates them with "
                    "commas and writes decimals with a point (export it as comma-separated values, "
                    "e.g. with an English number format).")
    found = joined if len(joined) <= 80 else joined[:77] + "..."
    return (f"Gaze CSV {name} lacks the column(s) {', '.join(missing)}; the header must start with "
            f"{','.join(REQUIRED)} (found {found!r}).")


def _read_rows(fh: TextIO, name: str, default_px_per_deg: float) -> list[GazeSample]:
    try:
        reader = csv.DictReader(fh)
        header = [h.strip().lstrip("\ufeff").lower() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise GazeError(_header_error(name, header, missing))
        reader.fieldnames = header
        samples = []
        bad: Optional[GazeError] = None
        for row in reader:
            where = f"{name} line {reader.line_num}"
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # blank line
            if bad is not None:
                raise bad  # a bad row with rows after it: the file is malformed, not cut short
            try:
                samples.append(_parse_row(row, where, default_px_per_deg))
            except GazeError as exc:
                bad = exc
        if bad is not None and not samples:
            raise bad
        if bad is not None:
            # Only the last row is bad: a recorder stopped mid-write (power cut, full disk). The
            # reading before it is whole, so it is kept rather than refused for one torn line.
            logger.warning("%s; the last row looks cut short and is left out", bad)
    except csv.Error as exc:
        raise GazeError(f"Gaze CSV {name} is malformed: {exc}.") from exc
    except UnicodeDecodeError as exc:
        raise GazeError(f"Gaze CSV {name} is not UTF-8 text.") from exc
    return samples


def _fmt(value: float, digits: int) -> str:
    return "" if not math.isfinite(value) else f"{value:.{digits}f}"


def write_gaze_csv(path: PathLike, samples: Iterable[GazeSample]) -> int:
    """Write samples as a gaze CSV with all five columns.

    x and y are written with 2 decimals (0.01 image px), px_per_deg with 4; a sample
    without gaze gets empty x and y, an unknown px_per_deg an empty cell.

    Returns
    -------
    int
        Number of rows written.

    Raises
    ------
    GazeError
        If the file cannot be written.
    """
    path = Path(path)
    count = 0
    try:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(COLUMNS)
            for s in samples:
                no_gaze = not (math.isfinite(s.x) and math.isfinite(s.y))
                writer.writerow([
                    int(s.timestamp_ns),
                    "" if no_gaze else _fmt(s.x, 2),
                    "" if no_gaze else _fmt(s.y, 2),
                    1 if s.worn else 0,
                    _fmt(s.px_per_deg, 4),
                ])
                count += 1
    except OSError as exc:
        raise GazeError(f"Cannot write gaze CSV {path}: {exc.strerror or exc}.") from exc
    logger.info("wrote %d gaze samples to %s", count, path.name)
    return count


class CsvReplaySource(SampleReplay):
    """Replay a gaze CSV (image coordinates) as a :class:`~appliance.gaze.base.GazeSource`.

    Parameters
    ----------
    path
        The CSV file.
    default_px_per_deg
        Used for rows without ``px_per_deg``.
    speed
        None or 0 for as fast as possible, else real-time pacing times this factor.
    """

    kind = "csv"

    def __init__(self, path: PathLike, default_px_per_deg: float = math.nan,
                 speed: Optional[float] = None, **kwargs: object) -> None:
        super().__init__(read_gaze_csv(path, default_px_per_deg), speed=speed, **kwargs)  # type: ignore[arg-type]
