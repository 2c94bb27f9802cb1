"""The glance pipeline: saliency, prompts, the SAM runtime, the domain-knowledge filter, lesions.

The package imports nothing itself, so ``glanceseg --help`` and the commands of other areas do
not load onnxruntime, OpenCV and SciPy; import from the modules: :mod:`engine`
(``GlanceEngine``), :mod:`live` (``GlancePipeline``, ``segment_gaze``), :mod:`scan`
(``segment_photograph``), :mod:`lesions`.
"""
