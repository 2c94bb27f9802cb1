"""int8 quantization of the exported ONNX graphs (build time only).

What the measurements on this 2-core AVX-512 VNNI CPU showed (see the report in
``manifest.json`` ``quantization``): quantizing *every* MatMul and Conv, statically
(MinMax) or dynamically, breaks LiteMedSAM's masks (IoU ~0.5 against fp32) because the
attention products Q·Kᵀ and attn·V lose too much in 8 bits, and onnxruntime's dynamic
ConvInteger is slower than fp32 Conv. What works is quantizing only the weight-bearing
linear layers (the ``Gemm``/``MatMul`` with a constant weight: ~45 % of the encoder's time),
leaving attention products, convolutions, LayerNorm, GELU and Softmax in fp32.
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


def quantize_dynamic_linear(src: Path, dst: Path) -> None:
    """Dynamic int8: the constant-weight linear layers only (weights int8, activations per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = gemm_to_matmul(onnx.load(str(src)))
    tmp = Path(dst).with_suffix(".pre.onnx")
    onnx.save(model, str(tmp))
    try:
        quantize_dynamic(str(tmp), str(dst), weight_type=QuantType.QInt8, per_channel=False,
                         op_types_to_quantize=["MatMul"], nodes_to_quantize=weight_matmuls(model),
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
                           method: str = "percentile") -> None:
    """Static int8 (QDQ), calibrated on fundus tiles: constant-weight linear layers only.

    Parameters
    ----------
    src, dst
        fp32 input and int8 output ``.onnx`` files.
    feeds
        Calibration inputs (graph input name -> array), e.g. normalised fundus tiles.
    method
        ``"minmax"``, ``"percentile"`` (99.999th) or ``"entropy"``.
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
