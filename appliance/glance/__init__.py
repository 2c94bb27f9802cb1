"""The glance pipeline: saliency, prompts, the SAM runtime, the domain-knowledge filter, lesions."""

from appliance.glance.engine import GlanceEngine, ImageSession, LesionEvent
from appliance.glance.lesions import Lesion, SegmentationResult
from appliance.glance.live import GlancePipeline, LiveReader, segment_gaze
from appliance.glance.scan import segment_photograph

__all__ = [
    "GlanceEngine", "ImageSession", "LesionEvent", "Lesion", "SegmentationResult", "GlancePipeline",
    "LiveReader", "segment_gaze", "segment_photograph",
]
