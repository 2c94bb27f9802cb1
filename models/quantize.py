"""int8 quantization of the exported ONNX graphs (build time only).

Measured on this 2-core AVX-512 VNNI CPU, int8 vs fp32 mask IoU of box prompts on real MAs
(IDRiD_09-12 tiles):

- every MatMul + Conv, static MinMax QDQ or dynamic: ~0.5 (the attention products Q·Kᵀ
  and attn·V lose too much in 8 bits; dynamic ConvInteger is also slower than fp32);
- constant-weight linear layers only, dynamic, per-tensor weights: 0.80;
- the same, per-channel weights: 0.91; after SmoothQuant rescaling (``smooth.py``) of the
  LayerNorm-fed layers and quantizing only those (qkv, fc1): 0.94-0.95 (shipped);
- percentile/entropy static calibration of the encoder keeps every activation in memory
  (19 GB for 16 tiles, killed): not used;
- decoder: static MinMax QDQ 0.89; dynamic int8 depends on the batch (per-tensor scales
  over all prompts); ``MatMulNBits`` 8-bit, per-row activations: 0.98 and batch-invariant
  (shipped).
- on top of the shipped encoder, the layers left in fp32 (``quantize_dynamic_linear(...,
  include=...)``, per-channel), ms a tile in one run beside the shipped 452 ms, and IoU with
  the int8 / fp32 decoder: ``attn/proj`` 466 ms, 0.941 / 0.938; ``fc2`` 391 ms, 0.920 /
  0.919; both 380 ms, 0.923 / 0.923. The fp32 decoder costs no more than the int8 one
  (2.2 vs 2.4 ms a prompt in a batch of 8) but lifts the shipped pair only to 0.953, not
  enough room for either layer.
- encoder ``qkv`` and ``fc1`` as ``MatMulNBits`` (``quantize_nbits_linear``, no smoothing):
  0.961, the best agreement measured, but 535-578 ms a tile against the shipped 490 in the
  same run (its x86 kernel is slower than ``DynamicQuantizeMatMul`` at 4,096+ rows); every
  linear layer that way: 0.945, 563 ms. ``docs/performance.md`` has the rest.
- ``fc2`` dynamic int8 on top of the shipped encoder, against the fp32 encoder (int8
  decoder; shipped 0.947): 0.914 plain, 0.917 after SmoothQuant through an explicit
  per-channel ``Mul``; its weights alone in int8 0.936, its activations alone 0.930, and no
  outlier channels to keep in fp32 (the largest at most 2.2x the 99th percentile).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite ``Gemm(A, B, C)`` with a constant B as ``MatMul(A, B') + C``.

    onnxruntime's dynamic quantizer has no Gemm kernel (only MatMul -> MatMulInteger /
    DynamicQuantizeMatMul), and torch exports ``nn.Linear`` on 2-D input as Gemm.
    """
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        wname = node.input[1] + "_kn"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), wname))
        mm_out = node.output[0] + "_mm" if len(node.input) > 2 else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], wname], [mm_out], name=node.name + "_matmul"))
        if len(node.input) > 2:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=node.name + "_bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose second input is a constant weight."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def quantize_dynamic_linear(src: Path, dst: Path, per_channel: bool = True,
                            include: Optional[tuple[str, ...]] = None) -> None:
    """Dynamic int8: constant-weight linear layers only (weights int8 per channel, activations per call).

    Parameters
    ----------
    src, dst
        fp32 input and int8 output ``.onnx`` files.
    per_channel
        One weight scale per output channel (per-tensor scales lose the small channels).
    include
        When given, only MatMul nodes whose name contains one of these substrings
        (e.g. ``("qkv", "fc1")``) are quantized.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = gemm_to_matmul(onnx.load(str(src)))
    nodes = [n for n in weight_matmuls(model) if include is None or any(k in n for k in include)]
    tmp = Path(dst).with_suffix(".pre.onnx")
    onnx.save(model, str(tmp))
    try:
        quantize_dynamic(str(tmp), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                         op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                         extra_options={"MatMulConstBOnly": True})
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("dynamic int8 %s", dst)


class _Reader:
    """onnxruntime CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - not used by the MinMax/Percentile calibrators here
        pass


def quantize_static_linear(src: Path, dst: Path, feeds: Iterable[dict[str, np.ndarray]],
                           method: str = "minmax") -> None:
    """Static int8 (QDQ), calibrated on fundus tiles: constant-weight linear layers only.

    Parameters
    ----------
    src, dst
        fp32 input and int8 output ``.onnx`` files.
    feeds
        Calibration inputs (graph input name -> array), e.g. normalised fundus tiles.
    method
        ``"minmax"`` (running min/max: little memory), ``"percentile"`` (99.999th) or
        ``"entropy"``. The last two keep every calibrated activation in memory: on the
        LiteMedSAM encoder, 16 tiles took 19 GB and were killed; use them on the decoder only.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = gemm_to_matmul(onnx.load(str(src)))
    tmp = Path(dst).with_suffix(".pre.onnx")
    onnx.save(model, str(tmp))
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    try:
        quantize_static(str(tmp), str(dst), _Reader(list(feeds)), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul"], nodes_to_quantize=weight_matmuls(model),
                        calibrate_method=methods[method],
                        extra_options={"CalibPercentile": 99.999, "MatMulConstBOnly": True})
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("static int8 (%s) %s", method, dst)


def quantize_nbits_linear(src: Path, dst: Path, bits: int = 8, block_size: int = 32, accuracy_level: int = 4,
                          include: Optional[tuple[str, ...]] = None) -> None:
    """Blockwise int8 weights (``MatMulNBits``) for the constant-weight linear layers.

    Weights are stored as int8 in blocks of ``block_size`` along K, each with its own
    scale; with ``accuracy_level=4`` onnxruntime also quantizes each *row* of the
    activations per block to int8 at run time and multiplies in int8 (VNNI). Per-row,
    per-block activation scales keep the outlier channels of one token from flattening the
    others, and a token's result does not depend on the other rows in the batch, so a
    prompt's mask is the same decoded alone or in a batch.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = gemm_to_matmul(onnx.load(str(src)))
    skip = [n.name for n in model.graph.node
            if n.op_type == "MatMul" and include is not None and not any(k in n.name for k in include)]
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level,
                                          bits=bits)
    quant = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=True,
                                 accuracy_level=accuracy_level, nodes_to_exclude=skip, algo_config=config)
    quant.process()
    quant.model.save_model_to_file(str(dst), use_external_data_format=False)
    logger.info("MatMulNBits int%d (block %d, accuracy level %d) %s", bits, block_size, accuracy_level, dst)
