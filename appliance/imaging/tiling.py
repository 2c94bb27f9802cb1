"""The fixed tile grid the model sees.

The encoder takes square tiles at its native input size (256 px for LiteMedSAM), so a
3–25 px microaneurysm is never shrunk away. The grid is anchored at the image origin and
never moves: the same image pixel always maps to the same tile, which is what makes
embedding caches, incremental processing and content-derived lesion ids stable between
a live gaze stream and a batch run over the same gaze.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class Tile:
    """One grid cell: ``row``, ``col`` and its top-left corner ``(x0, y0)`` in image px.

    Tiles at the right and bottom edges may reach past the image; the pixels outside are
    padded with zeros when the tile is cut.
    """

    row: int
    col: int
    x0: int
    y0: int
    size: int

    @property
    def key(self) -> tuple[int, int]:
        """tuple[int, int]: ``(row, col)``, stable across runs."""
        return (self.row, self.col)

    @property
    def center_xy(self) -> tuple[float, float]:
        """tuple[float, float]: the tile's centre in image px."""
        half = self.size / 2.0
        return (self.x0 + half, self.y0 + half)


@dataclass(frozen=True)
class TileGrid:
    """A fixed grid of ``size``-px tiles with ``overlap`` px shared between neighbours.

    Parameters
    ----------
    width, height
        Image size in px.
    size
        Tile side in px (the model's input size).
    overlap
        Pixels shared by neighbouring tiles, so every point lies at least ``overlap / 2``
        px inside some tile.
    """

    width: int
    height: int
    size: int = 256
    overlap: int = 64

    def __post_init__(self) -> None:
        if self.size <= 0 or not 0 <= self.overlap < self.size:
            raise ValueError("Tile size must be positive and overlap must lie in [0, size).")
        if self.width <= 0 or self.height <= 0:
            raise ValueError("Image width and height must be positive.")

    @property
    def stride(self) -> int:
        """int: distance in px between the origins of neighbouring tiles."""
        return self.size - self.overlap

    @property
    def rows(self) -> int:
        """int: number of tile rows needed to cover the image."""
        return max(1, math.ceil((self.height - self.overlap) / self.stride))

    @property
    def cols(self) -> int:
        """int: number of tile columns needed to cover the image."""
        return max(1, math.ceil((self.width - self.overlap) / self.stride))

    def tile(self, row: int, col: int) -> Tile:
        """Return the tile at ``(row, col)``.

        Raises
        ------
        ValueError
            If the cell lies outside the grid.
        """
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise ValueError(f"Tile ({row}, {col}) lies outside the {self.rows}x{self.cols} grid.")
        return Tile(row, col, col * self.stride, row * self.stride, self.size)

    def __iter__(self) -> Iterator[Tile]:
        for row in range(self.rows):
            for col in range(self.cols):
                yield self.tile(row, col)

    def best_tile(self, x: float, y: float) -> Tile:
        """Return the tile whose centre is nearest to image point ``(x, y)``.

        That tile holds the point at least ``overlap / 2`` px from its edges (away from the
        image border), so a prompt there sees its whole surroundings.
        """
        col = int(np.clip(round((x - self.size / 2.0) / self.stride), 0, self.cols - 1))
        row = int(np.clip(round((y - self.size / 2.0) / self.stride), 0, self.rows - 1))
        return self.tile(row, col)

    def cut(self, image: np.ndarray, tile: Tile) -> np.ndarray:
        """Cut ``tile`` out of ``image`` (H×W or H×W×C), zero-padded past the image edge."""
        out = np.zeros((self.size, self.size) + image.shape[2:], dtype=image.dtype)
        h = max(0, min(self.size, image.shape[0] - tile.y0))
        w = max(0, min(self.size, image.shape[1] - tile.x0))
        out[:h, :w] = image[tile.y0:tile.y0 + h, tile.x0:tile.x0 + w]
        return out
