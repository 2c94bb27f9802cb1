"""Fundus photographs: reading, field of view, pixel scale, quality and the model's tile grid."""

from appliance.imaging.fov import FieldOfView, find_fov
from appliance.imaging.io import Photograph, load_photograph
from appliance.imaging.quality import QualityReport, check_quality
from appliance.imaging.scale import um_per_px
from appliance.imaging.tiling import Tile, TileGrid

__all__ = [
    "FieldOfView", "find_fov", "Photograph", "load_photograph", "QualityReport", "check_quality",
    "um_per_px", "Tile", "TileGrid",
]
