"""SAM runtime over onnxruntime: one session class for the encoder and the batched decoder.

Execution providers are picked TensorRT -> CUDA -> CPU from what the installed onnxruntime
build offers (a Jetson uses NVIDIA's wheel, a laptop the CPU one), and the choice is logged.
Model bytes come from :mod:`appliance.glance.modelfiles` already sha256-verified.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from appliance.config import ModelConfig
from appliance.errors import ModelError
from appliance.glance.agreement import normalise_tile
from appliance.glance.modelfiles import ModelFiles
from appliance.glance.runtime.base import MAX_DECODE_BATCH, OPT_DECODE_BATCH, SamRuntime

logger = logging.getLogger(__name__)

#: preference order when ``[model] providers = "auto"``
PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_SHORT = {"tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
          "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def choose_providers(requested: str, available: Sequence[str], model: ModelConfig) -> list[tuple[str, dict]]:
    """Pick execution providers, best first, with their options.

    Parameters
    ----------
    requested
        ``"auto"`` (TensorRT -> CUDA -> CPU, whichever the build offers) or a comma list of
        ``tensorrt``, ``cuda``, ``cpu`` in the order wanted.
    available
        ``onnxruntime.get_available_providers()``.
    model
        The ``[model]`` section (TensorRT engine cache folder and FP16).

    Returns
    -------
    list of (str, dict)
        Providers with options; the CPU provider is always last, as the fallback.

    Raises
    ------
    ValueError
        If ``requested`` names an unknown provider.
    """
    if requested.strip().lower() == "auto":
        wanted = list(PREFERENCE)
    else:
        wanted = []
        for name in (n.strip().lower() for n in requested.split(",") if n.strip()):
            if name not in _SHORT:
                raise ValueError(f"Unknown execution provider {name!r}; use auto, tensorrt, cuda or cpu.")
            wanted.append(_SHORT[name])
    chosen: list[tuple[str, dict]] = []
    for name in wanted:
        if name not in available:
            if requested.strip().lower() != "auto":
                logger.warning("execution provider %s is not in this onnxruntime build; skipped", name)
            continue
        options: dict[str, Any] = {}
        if name == "TensorrtExecutionProvider":
            cache = Path(model.trt_cache_dir).expanduser()
            options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                       "trt_fp16_enable": bool(model.fp16), "trt_int8_enable": False}
        chosen.append((name, options))
    if not any(n == "CPUExecutionProvider" for n, _ in chosen):
        chosen.append(("CPUExecutionProvider", {}))
    return chosen


def configured_providers(model: ModelConfig) -> list[tuple[str, dict]]:
    """:func:`choose_providers` for ``[model] providers`` and what this onnxruntime build offers."""
    import onnxruntime as ort

    return choose_providers(model.providers, ort.get_available_providers(), model)


def session_options(model: ModelConfig, optimized_path: Optional[Path] = None) -> Any:
    """Build onnxruntime SessionOptions from the ``[model]`` section.

    Full graph optimisation; ``intra_op_threads = 0`` keeps onnxruntime's default (one
    thread per core); spinning and the CPU arena follow config (spinning wastes a core that
    other work on a 2-core box needs while the decoder idles between fixations).

    The memory pattern is off: with it, onnxruntime plans one block for all of a run's
    activations and, after the first run, allocates it beside the arena chunks the first run
    left behind, so the int8 encoder session peaks ~280 MB higher (753 vs 470 MB measured,
    docs/performance.md) for no measurable speed-up on this CPU.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if model.intra_op_threads > 0:
        so.intra_op_num_threads = int(model.intra_op_threads)
    if model.inter_op_threads > 0:
        so.inter_op_num_threads = int(model.inter_op_threads)
    so.enable_cpu_mem_arena = bool(model.cpu_arena)
    so.enable_mem_pattern = False
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if model.allow_spinning else "0")
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    so.log_severity_level = 3
    return so


def resolve_variant(model: ModelConfig, providers: Sequence[tuple[str, dict]]) -> str:
    """The model variant to load: ``[model] variant``, or for ``auto`` the one that suits the provider.

    ``auto`` takes ``int8`` when the CPU provider leads and ``fp32`` when a GPU provider does.
    The int8 files are dynamically quantized for the CPU's VNNI instructions; on the CUDA
    provider their MatMulInteger and DynamicQuantizeLinear nodes have no GPU kernel, so
    onnxruntime runs them on the CPU and copies activations across at every layer: measured
    on an H200, 72 ms a tile against 15 ms for fp32 (profiled, docs/performance.md). TensorRT
    builds its own FP16 engine from the fp32 graph. The choice follows the providers asked
    for: a GPU build whose GPU is missing falls back to the CPU with the fp32 files (25%
    slower there than int8); ``firmware_scripts/healthcheck`` warns of that fallback.
    """
    if model.variant != "auto":
        return model.variant
    return "int8" if providers[0][0] == "CPUExecutionProvider" else "fp32"


def with_trt_options(providers: Sequence[tuple[str, dict]], options: dict) -> list[tuple[str, dict]]:
    """``providers`` with ``options`` added to the TensorRT provider's own (a copy; others unchanged)."""
    return [(name, {**opts, **options} if name == "TensorrtExecutionProvider" else opts) for name, opts in providers]


def trt_batch_profile(input_name: str, row_shape: Sequence[int], opt_rows: int, max_rows: int) -> dict[str, str]:
    """TensorRT optimisation-profile options for an input whose first dimension varies.

    Why: without one, onnxruntime's TensorRT provider builds the engine for the first shape it
    sees and rebuilds it (minutes on a Jetson) whenever a call brings a larger batch. With the
    profile the engine covers 1..``max_rows`` rows from the start, and the engine that
    ``glanceseg models warmup`` caches is the one every later call uses.
    """
    dims = "x".join(str(int(d)) for d in row_shape)
    return {f"trt_profile_{k}_shapes": f"{input_name}:{n}x{dims}"
            for k, n in (("min", 1), ("opt", opt_rows), ("max", max_rows))}


def engine_cache_dir(model: ModelConfig, manifest_sha256: str) -> Path:
    """The TensorRT engine cache folder of one model and precision, under ``[model] trt_cache_dir``.

    Why a folder per model: onnxruntime keys a cached engine on the graph's structure and
    tensor names, not its weights. After a model update that keeps the graph (a fine-tuned
    decoder, ``glanceseg models install``) it would load the previous model's engine and run
    the previous weights, silently. The manifest's sha256 changes with any model file, so a new
    model builds engines of its own (``firmware_scripts/build-trt-engines`` removes old ones).
    """
    precision = "fp16" if model.fp16 else "fp32"
    return Path(model.trt_cache_dir).expanduser() / f"{manifest_sha256[:16]}-{precision}"


def open_session(data: bytes, providers: Sequence[tuple[str, dict]], label: str, sess_options: Any = None) -> Any:
    """``onnxruntime.InferenceSession`` over model bytes: a clear error, and a logged fallback.

    A provider the build lists may still fail to start (onnxruntime-gpu's TensorRT provider
    without libnvinfer). onnxruntime would then fall back by itself and *print* its error
    banner to stdout, where it corrupted ``glanceseg bench --json`` on a GPU machine
    (docs/gpu-bench). So its creation-time fallback is off, and this function drops the
    failing provider, logs why and tries the next; its fallback for a provider that fails
    while running stays on.
    """
    import onnxruntime as ort

    providers = list(providers)
    while True:
        try:
            sess = ort.InferenceSession(data, sess_options=sess_options,
                                        providers=[p for p, _ in providers],
                                        provider_options=[o for _, o in providers], enable_fallback=0)
            break
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            if len(providers) > 1:
                logger.warning("onnxruntime cannot start %s for the %s (%s); trying %s", providers[0][0], label,
                               " ".join(str(exc).split())[:300], ", ".join(p for p, _ in providers[1:]))
                providers = providers[1:]
                continue
            raise ModelError(f"onnxruntime cannot load the {label}: {exc}") from exc
    sess.enable_fallback()
    logger.info("%s session on %s", label, ", ".join(sess.get_providers()))
    return sess


def make_session(data: bytes, model: ModelConfig, label: str,
                 providers: Optional[Sequence[tuple[str, dict]]] = None) -> Any:
    """Create an InferenceSession from verified model bytes with the configured providers and settings."""
    return open_session(data, configured_providers(model) if providers is None else providers, label,
                        session_options(model))


class OnnxSamRuntime(SamRuntime):
    """LiteMedSAM (or any model built by ``models/build.py``) on onnxruntime.

    Parameters
    ----------
    files
        The loaded model folder; the encoder and decoder of the variant (:func:`resolve_variant`) are read and
        sha256-verified from it.
    model
        The ``[model]`` configuration section.

    Raises
    ------
    ModelError
        If a model file is missing or altered, or onnxruntime cannot load it.
    """

    def __init__(self, files: ModelFiles, model: ModelConfig) -> None:
        prompts = files.manifest.get("prompt_kinds", ["box"])
        if "box" not in prompts:
            raise ModelError(f"Model {files.name} takes {prompts} prompts; the appliance needs box prompts.")
        self.name = files.name
        self.model_sha256 = files.manifest_sha256
        providers = configured_providers(model)
        if any(name == "TensorrtExecutionProvider" for name, _ in providers):
            cache = engine_cache_dir(model, files.manifest_sha256)
            cache.mkdir(parents=True, exist_ok=True)
            providers = with_trt_options(providers, {"trt_engine_cache_path": str(cache)})
        self.variant = resolve_variant(model, providers)
        self._size = files.input_size
        self._encoder = make_session(files.read_verified("encoder", self.variant), model, "encoder", providers)
        self._decoder = make_session(files.read_verified("decoder", self.variant), model, "decoder",
                                     with_trt_options(providers, trt_batch_profile("boxes", (4,), OPT_DECODE_BATCH,
                                                                                   MAX_DECODE_BATCH)))

    @property
    def input_size(self) -> int:
        """int: S, the tile side in px (256 for LiteMedSAM)."""
        return self._size

    @property
    def providers(self) -> list[str]:
        """list of str: the execution providers the encoder session actually runs on, best first."""
        return list(self._encoder.get_providers())

    def encode(self, tile_rgb: np.ndarray) -> np.ndarray:
        """Return the 1x256x64x64 float32 embedding of one SxSx3 uint8 RGB tile."""
        if tile_rgb.shape != (self._size, self._size, 3) or tile_rgb.dtype != np.uint8:
            raise ValueError(f"encode takes a {self._size}x{self._size}x3 uint8 tile, not "
                             f"{tile_rgb.shape} {tile_rgb.dtype}.")
        return self._encoder.run(["image_embeddings"], {"image": normalise_tile(tile_rgb)})[0]

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode N boxes (Nx4, tile px) in one call: NxSxS float32 logits and N IoU estimates."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, self._size, self._size), np.float32), np.zeros(0, np.float32)
        parts = [self._decoder.run(["masks", "iou_predictions"],
                                   {"image_embeddings": embedding, "boxes": boxes[i:i + MAX_DECODE_BATCH]})
                 for i in range(0, len(boxes), MAX_DECODE_BATCH)]
        if len(parts) == 1:
            return parts[0][0][:, 0], parts[0][1][:, 0]
        return (np.concatenate([m[:, 0] for m, _ in parts]), np.concatenate([iou[:, 0] for _, iou in parts]))
