"""Model-side figures for ``glanceseg bench``: encoder, decoder, int8 agreement, matmul floor.

Each function measures one figure on this machine, baseline beside the shipped path in the
same process, so the ratio holds on a noisy machine. Timings are medians of a few runs
after one warm-up run; progress goes to the logger (the CLI sends it to stderr).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from appliance.config import Config
from appliance.eval.dataset import REPORT_IDS
from appliance.glance.agreement import AGREEMENT_IDS, idrid_prompt_tiles, mean_mask_iou, normalise_tile
from appliance.glance.modelfiles import ModelFiles, load_for_config
from appliance.glance.runtime.onnx import OnnxSamRuntime, configured_providers, open_session

logger = logging.getLogger(__name__)

#: LiteMedSAM encoder FLOPs per 256x256 tile (torch's FLOP counter; DESIGN.md)
ENCODER_GFLOP = 75.0


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocations, kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def _tile(seed: int = 0) -> np.ndarray:
    """A fundus-like 256x256x3 uint8 tile (timings do not depend on content)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)


def encoder_ms_naive(files: ModelFiles, config: Config, repeats: int = 3) -> float:
    """The committed fp32 encoder under onnxruntime's *default* SessionOptions, ms per tile.

    It runs on the configured execution providers (with their default options), so on a GPU
    box the baseline is the naive export on the GPU, not a CPU figure beside a GPU one.
    """
    providers = [(name, {}) for name, _ in configured_providers(config.model)]
    sess = open_session(files.read_verified("encoder", "fp32"), providers, "naive fp32 encoder")
    feed = {"image": normalise_tile(_tile())}
    return _median_ms(lambda: sess.run(None, feed), repeats)


def encoder_ms_shipped(runtime: OnnxSamRuntime, repeats: int = 3) -> float:
    """The shipped encoder (configured variant and session settings), ms per tile incl. normalisation."""
    tile = _tile()
    return _median_ms(lambda: runtime.encode(tile), repeats)


def decoder_ms_per_prompt(runtime: OnnxSamRuntime, batch: int = 8, repeats: int = 3) -> tuple[float, float]:
    """Decoder ms per prompt: one prompt per call, and ``batch`` prompts in one call."""
    emb = runtime.encode(_tile())
    rng = np.random.default_rng(1)
    xy = rng.uniform(20, 220, (batch, 2))
    boxes = np.concatenate([xy - 10, xy + 10], axis=1).astype(np.float32)
    single = _median_ms(lambda: runtime.decode(emb, boxes[:1]), repeats)
    batched = _median_ms(lambda: runtime.decode(emb, boxes), repeats) / batch
    return single, batched


def int8_vs_fp32_iou(config: Config, data_dir: Path, ids: Sequence[str] = AGREEMENT_IDS,
                     tiles_per_image: int = 2) -> float:
    """Mean mask IoU, int8 vs fp32 model (encoder + decoder), box prompts on real MAs of ``ids``.

    The default, IDRiD_09-12 with 2 tiles each, gives the tiles and prompts ``models/build.py``
    records in ``manifest.json``; that build chose the int8 method on them, so the bench also
    measures :data:`REPORT_IDS`, which no build step has seen.
    """
    files = load_for_config(config)
    tiles = idrid_prompt_tiles(Path(data_dir), ids, tiles_per_image=tiles_per_image)
    masks = {}
    for variant in ("fp32", "int8"):
        rt = OnnxSamRuntime(files, config.replace(model={"variant": variant}).model)
        masks[variant] = [rt.decode(rt.encode(t.rgb), t.boxes)[0] for t in tiles]
        logger.info("agreement: %s masks on %d tiles", variant, len(tiles))
    return mean_mask_iou(masks["int8"], masks["fp32"])


def matmul_rates(n: int = 2048, repeats: int = 3) -> dict[str, float]:
    """onnxruntime's MatMul rate on an n^3 product: fp32 GFLOP/s and dynamic-int8 GOP/s."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "W"], ["Y"])], "mm",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])], [weight])
    # IR version 10 pinned: a newer onnx package writes an IR version an older onnxruntime
    # refuses ("Unsupported model IR version: 14, max supported IR version: 13")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    feed = {"A": rng.standard_normal((n, n)).astype(np.float32)}
    ops = 2.0 * n ** 3
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "mm.onnx", Path(tmp) / "mm_int8.onnx"
        onnx.save(model, str(fp32))
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        for key, path in (("matmul_gflops_fp32", fp32), ("matmul_gops_int8", int8)):
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            ms = _median_ms(lambda: sess.run(None, feed), repeats)
            out[key] = round(ops / (ms / 1000.0) / 1e9, 1)
    return out


def run_model_bench(config: Config, data_dir: Optional[Path] = None, repeats: int = 3) -> dict[str, object]:
    """All model-side figures of ``glanceseg bench`` in one run (keys as DESIGN.md names them).

    Returns
    -------
    dict
        ``encoder_ms_naive``, ``encoder_ms``, ``decoder_ms_per_prompt_single``,
        ``execution_providers`` and ``model_variant`` (what the shipped encoder runs on and which file),
        ``decoder_ms_per_prompt_batched``, ``int8_vs_fp32_iou`` and ``int8_vs_fp32_iou_report``
        (IDRiD_09-12 and IDRiD_13-24, when ``data_dir`` is given),
        ``matmul_gflops_fp32``, ``matmul_gops_int8``, ``encoder_floor_ms_fp32``,
        ``encoder_floor_ms_int8``.
    """
    files = load_for_config(config)
    runtime = OnnxSamRuntime(files, config.model)
    out: dict[str, object] = {"execution_providers": ",".join(runtime.providers), "model_variant": runtime.variant}
    logger.info("bench: encoder, naive fp32 under default session options")
    out["encoder_ms_naive"] = round(encoder_ms_naive(files, config, repeats), 1)
    logger.info("bench: encoder, shipped (%s)", runtime.variant)
    out["encoder_ms"] = round(encoder_ms_shipped(runtime, repeats), 1)
    logger.info("bench: decoder")
    single, batched = decoder_ms_per_prompt(runtime, repeats=repeats)
    out["decoder_ms_per_prompt_single"] = round(single, 2)
    out["decoder_ms_per_prompt_batched"] = round(batched, 2)
    logger.info("bench: matmul rates")
    out.update(matmul_rates(repeats=repeats))
    out["encoder_floor_ms_fp32"] = round(ENCODER_GFLOP / out["matmul_gflops_fp32"] * 1000.0, 1)
    out["encoder_floor_ms_int8"] = round(ENCODER_GFLOP / out["matmul_gops_int8"] * 1000.0, 1)
    if data_dir is not None:
        logger.info("bench: int8 vs fp32 agreement")
        out["int8_vs_fp32_iou"] = round(int8_vs_fp32_iou(config, data_dir), 4)
        out["int8_vs_fp32_iou_report"] = round(int8_vs_fp32_iou(config, data_dir, REPORT_IDS), 4)
    return out
