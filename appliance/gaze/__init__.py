"""Gaze: sources behind one interface, screen -> image geometry, fixations, heat map, ROIs."""

from appliance.gaze.base import GazeSample, GazeSource, SourceStatus
from appliance.gaze.fixations import Fixation, FixationDetector, FixationParams, detect_fixations
from appliance.gaze.gazemap import GazeMap
from appliance.gaze.geometry import ViewTransform, default_image_px_per_deg, screen_px_per_deg
from appliance.gaze.heatmap import GazeHeatmap, HeatmapParams
from appliance.gaze.roi import NewGround, Roi, RoiTracker
from appliance.gaze.sources import SOURCE_BUILDERS, build_source, fixation_params, heatmap_params

__all__ = [
    "GazeSample", "GazeSource", "SourceStatus",
    "Fixation", "FixationDetector", "FixationParams", "detect_fixations",
    "GazeMap",
    "ViewTransform", "default_image_px_per_deg", "screen_px_per_deg",
    "GazeHeatmap", "HeatmapParams",
    "NewGround", "Roi", "RoiTracker",
    "SOURCE_BUILDERS", "build_source", "fixation_params", "heatmap_params",
]
