"""Lesions and segmentation results: what the glance pipeline hands to the rest of the appliance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass
class Lesion:
    """One candidate microaneurysm.

    Attributes
    ----------
    id
        Integer unique within one image, derived from content (tile grid cell and position)
        so a live stream and a batch run over the same gaze give the same ids.
    x, y
        Centroid in image px.
    area_px
        Mask area in image px.
    bbox
        ``(x0, y0, x1, y1)`` in image px, exclusive end.
    score
        0..1; ranks lesions (a FROC sweep thresholds it). Low scores are kept.
    source
        ``"model"`` when the mask came from the SAM decoder, ``"saliency"`` when from the
        saliency map alone.
    mask
        Boolean crop of the lesion mask, origin at ``(bbox[0], bbox[1])``.
    features
        Named measurements the domain-knowledge filter used (for audit and fine-tuning).
    """

    id: int
    x: float
    y: float
    area_px: int
    bbox: tuple[int, int, int, int]
    score: float
    source: str
    mask: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    features: dict[str, float] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Return the lesion as the ``lesions.json`` contract writes it."""
        return {
            "id": int(self.id),
            "x": round(float(self.x), 2),
            "y": round(float(self.y), 2),
            "area_px": int(self.area_px),
            "bbox": [int(v) for v in self.bbox],
            "score": round(float(self.score), 5),
            "source": self.source,
        }


@dataclass
class SegmentationResult:
    """Everything one segmentation run produced for one photograph.

    Attributes
    ----------
    width, height
        Image size in px.
    mode
        ``"scan"`` or ``"gaze"``.
    lesions
        Every candidate with its score, best first.
    display_threshold
        Lesions with ``score >= display_threshold`` are the ones shown (and in ``mask.png``).
    model_name, model_sha256
        Model family and the sha256 of ``models/manifest.json`` as loaded.
    timings_ms
        Named stage timings.
    um_per_px
        The pixel size every µm rule was applied at (None where not recorded).
    gradable, quality, quality_reasons
        The image-quality verdict, its measures, and a sentence per failed measure keyed
        by the measure (:class:`~appliance.imaging.quality.QualityReport`).
    gaze_samples
        Gaze mode: the fixation detector's counts (samples accepted, fixations found, and
        samples dropped by kind: not worn, no gaze, off the image, backwards, ...), so a
        reading that yields no lesion says why; None in scan mode.
    gaze_calibration
        Gaze mode: the tracker offset fitted from the dwells and used in the scores
        (:class:`~appliance.glance.gaze_calibration.GazeCalibration` as a dict), or None.
    """

    width: int
    height: int
    mode: str
    lesions: list[Lesion]
    display_threshold: float
    model_name: str
    model_sha256: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    um_per_px: Optional[float] = None
    gradable: bool = True
    quality: dict[str, float] = field(default_factory=dict)
    quality_reasons: dict[str, str] = field(default_factory=dict)
    gaze_samples: Optional[dict[str, int]] = None
    gaze_calibration: Optional[dict[str, Any]] = None

    @property
    def shown(self) -> list[Lesion]:
        """list[Lesion]: lesions at or above the display threshold."""
        return [l for l in self.lesions if l.score >= self.display_threshold]

    def mask(self, lesions: Optional[list[Lesion]] = None) -> np.ndarray:
        """Return an H×W uint8 mask, 255 on the pixels of ``lesions`` (default: the shown ones)."""
        out = np.zeros((self.height, self.width), dtype=np.uint8)
        for lesion in self.shown if lesions is None else lesions:
            if lesion.mask is None:
                continue
            x0, y0 = lesion.bbox[0], lesion.bbox[1]
            h, w = lesion.mask.shape
            out[y0:y0 + h, x0:x0 + w][lesion.mask] = 255
        return out
