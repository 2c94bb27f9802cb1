"""Data sets laid out like ``idrid-ma``: an ``index.csv`` plus photographs and MA masks.

The evaluation reads ground truth from the masks themselves (8-connected components), so
any data set with the same layout can be scored without a second annotation format.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np

from appliance.errors import ImageError

logger = logging.getLogger(__name__)

#: The fixed split of DESIGN.md: tune and train on these, report on the rest.
TUNE_IDS: tuple[str, ...] = tuple(f"IDRiD_{i:02d}" for i in range(1, 13))
REPORT_IDS: tuple[str, ...] = tuple(f"IDRiD_{i:02d}" for i in range(13, 25) if i != 18)


@dataclass(frozen=True)
class DatasetItem:
    """One row of ``index.csv``.

    Attributes
    ----------
    id
        Image identifier (``IDRiD_01``).
    image_path, mask_path
        Absolute paths of the photograph and of its 8-bit MA mask (255 = MA).
    width, height
        Image size in px as the index states it.
    """

    id: str
    image_path: Path
    mask_path: Path
    width: int
    height: int

    def load_rgb(self) -> np.ndarray:
        """Return the photograph as an H×W×3 uint8 RGB array.

        Raises
        ------
        ImageError
            If the file cannot be decoded.
        """
        bgr = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ImageError(f"Cannot read photograph {self.image_path}.")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def load_mask(self) -> np.ndarray:
        """Return the MA mask as an H×W bool array.

        Raises
        ------
        ImageError
            If the file cannot be decoded.
        """
        mask = cv2.imread(str(self.mask_path), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise ImageError(f"Cannot read mask {self.mask_path}.")
        if mask.ndim == 3:
            mask = mask.max(axis=2)
        return mask > 0


def load_dataset(root: Path, ids: Optional[Sequence[str]] = None) -> list[DatasetItem]:
    """Read ``root/index.csv`` and return its rows, optionally only the listed ids.

    Parameters
    ----------
    root
        Data set folder holding ``index.csv`` (columns ``id``, ``image``, ``mask``,
        ``width``, ``height``; others are ignored).
    ids
        Keep only these ids, in the index's order; ids absent from the index are skipped
        (IDRiD_18 is left out of ``idrid-ma``).

    Returns
    -------
    list[DatasetItem]

    Raises
    ------
    ImageError
        If the index is missing or lacks a required column.
    """
    root = Path(root)
    index = root / "index.csv"
    if not index.is_file():
        raise ImageError(f"{root} holds no index.csv; expected a data set laid out like idrid-ma.")
    # utf-8-sig: an index saved by a spreadsheet starts with a byte-order mark, which
    # would otherwise become part of the first column's name ("id").
    with open(index, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    required = {"id", "image", "mask"}
    if rows and not required <= set(rows[0]):
        raise ImageError(f"{index} lacks the column(s) {', '.join(sorted(required - set(rows[0])))}.")
    wanted = None if ids is None else set(ids)
    items = []
    for row in rows:
        if wanted is not None and row["id"] not in wanted:
            continue
        items.append(DatasetItem(
            id=row["id"],
            image_path=(root / row["image"]).resolve(),
            mask_path=(root / row["mask"]).resolve(),
            width=int(row.get("width") or 0),
            height=int(row.get("height") or 0),
        ))
    logger.debug("loaded %d of %d rows from %s", len(items), len(rows), index)
    return items


def iter_split(root: Path, split: str) -> Iterator[DatasetItem]:
    """Yield the items of ``split``: ``"tune"`` (01–12), ``"report"`` (13–24) or ``"all"``."""
    if split not in ("tune", "report", "all"):
        raise ValueError(f"Unknown split {split!r}; use 'tune', 'report' or 'all'.")
    ids = {"tune": TUNE_IDS, "report": REPORT_IDS, "all": None}[split]
    yield from load_dataset(root, ids)
