"""The SAM runtime interface: encode a tile once, decode many box prompts against it.

Frames: a *tile* is an SxSx3 uint8 RGB cut of the fixed grid (``imaging.tiling``), S the
model's input size (256 for LiteMedSAM). Box prompts and output masks are in *tile px*
(origin at the tile's top-left corner, x to the right, y down).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import numpy as np

logger = logging.getLogger(__name__)

#: Most box prompts one decoder call takes; a runtime splits a longer batch. It bounds the
#: decoder's activation memory (N × S × S logits and the upscaled mask features), and it is the
#: top of the TensorRT optimisation profile the ONNX runtime builds the decoder's engine for,
#: so no call falls outside the cached engine and sets the TensorRT builder off mid-reading.
MAX_DECODE_BATCH = 16
#: The decoder batch a GPU engine is tuned for: per-prompt time is flat from about 8 prompts up.
OPT_DECODE_BATCH = 8


class SamRuntime(ABC):
    """A SAM-family model split into an image encoder and a batched box decoder.

    Implementations must be safe to call from several threads at once (background
    pre-encoding runs beside interactive decoding).
    """

    #: name of the model family (``"litemedsam"``)
    name: str = ""
    #: sha256 of the manifest the model came from
    model_sha256: str = ""

    @property
    @abstractmethod
    def input_size(self) -> int:
        """int: S, the square tile side in px the encoder takes."""

    @abstractmethod
    def encode(self, tile_rgb: np.ndarray) -> np.ndarray:
        """Encode one tile.

        Parameters
        ----------
        tile_rgb
            SxSx3 uint8 RGB tile.

        Returns
        -------
        numpy.ndarray
            The image embedding, opaque to callers (LiteMedSAM: 1x256x64x64 float32).
        """

    @abstractmethod
    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode a batch of box prompts against one tile's embedding.

        Parameters
        ----------
        embedding
            What :meth:`encode` returned for the tile.
        boxes
            Nx4 float ``(x0, y0, x1, y1)`` in tile px, N >= 0 (split into calls of at most
            :data:`MAX_DECODE_BATCH`).

        Returns
        -------
        logits : numpy.ndarray
            NxSxS float32 mask logits in tile px (> 0 is lesion).
        iou : numpy.ndarray
            N float32, the model's own estimate of each mask's IoU.
        """

    def close(self) -> None:
        """Release sessions and memory (optional)."""
