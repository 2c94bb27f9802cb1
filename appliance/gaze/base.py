"""The one interface every gaze source implements.

The pipeline needs the *full* stream (fixation detection breaks on a newest-sample-only
cache), so sources push every sample into a bounded queue and the consumer pulls with a
blocking ``receive(timeout_s)``, the shape of Pupil Labs' simple API but without its
``maxlen=1``. Asyncio stays inside the sources that need it (the Neon client).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class GazeSample:
    """One gaze sample in image coordinates.

    Attributes
    ----------
    timestamp_ns
        Time of the sample in the appliance's clock (ns since the Unix epoch, or since the
        start of a recording for replays).
    x, y
        Gaze in image px; NaN when the sample carries no gaze (blink, track loss, off screen).
    worn
        False when the tracker reports it is not worn.
    px_per_deg
        Image pixels per degree of visual angle at this moment (changes with zoom); NaN when
        unknown, in which case the consumer uses the configured display geometry.
    """

    timestamp_ns: int
    x: float
    y: float
    worn: bool = True
    px_per_deg: float = math.nan

    @property
    def has_gaze(self) -> bool:
        """bool: True when x and y are finite and the tracker is worn."""
        return self.worn and math.isfinite(self.x) and math.isfinite(self.y)


@dataclass
class SourceStatus:
    """What the UI shows about a gaze source."""

    kind: str
    connected: bool
    detail: dict[str, object] = field(default_factory=dict)


class GazeSource(abc.ABC):
    """A stream of :class:`GazeSample` in image coordinates.

    Implementations: pointer, CSV replay, Pupil Labs export replay, simulated reader, Neon.
    """

    kind: str = "abstract"

    @abc.abstractmethod
    def receive(self, timeout_s: Optional[float] = None) -> Optional[GazeSample]:
        """Return the next sample, or None when none arrived within ``timeout_s``.

        Raises
        ------
        StopIteration
            Never; a finished finite source returns None and sets :attr:`finished`.
        """

    @property
    def finished(self) -> bool:
        """bool: True when a finite source (a replay) has delivered its last sample."""
        return False

    @property
    def speed(self) -> float:
        """float: stream seconds per wall-clock second: 1 for a live tracker, a paced replay's factor.

        A consumer that advances the stream's clock while the source is quiet (to end a
        fixation without waiting for the next sample) scales the time it waited by this.
        """
        return 1.0

    def status(self) -> SourceStatus:
        """Return the source's state for the UI."""
        return SourceStatus(kind=self.kind, connected=True)

    def close(self) -> None:
        """Release threads, sockets and files. Idempotent."""

    def __enter__(self) -> "GazeSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
