"""The onnxruntime SAM runtime: provider choice, session settings, and the real int8 model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from appliance.config import ModelConfig
from appliance.errors import ModelError
from appliance.glance.runtime.factory import build_runtime
from appliance.glance.runtime.base import MAX_DECODE_BATCH
from appliance.glance.runtime.onnx import (choose_providers, engine_cache_dir, make_session, resolve_variant,
                                          session_options, trt_batch_profile, with_trt_options)

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def _relu_model() -> bytes:
    """A one-node ONNX model: enough for onnxruntime to open a session."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10).SerializeToString()


def test_auto_prefers_tensorrt_then_cuda_then_cpu():
    model = ModelConfig(trt_cache_dir=Path("/tmp/trt"), fp16=True)
    chosen = choose_providers("auto", list(reversed(ALL)) + ["AzureExecutionProvider"], model)
    assert [name for name, _ in chosen] == ALL
    assert chosen[0][1]["trt_engine_cache_path"] == "/tmp/trt" and chosen[0][1]["trt_fp16_enable"] is True
    assert [n for n, _ in choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"], model)] == ALL[1:]
    assert [n for n, _ in choose_providers("auto", ["CPUExecutionProvider"], model)] == ["CPUExecutionProvider"]


def test_decoder_engine_profile_spans_every_batch_a_call_can_bring():
    chosen = choose_providers("auto", ALL, ModelConfig(trt_cache_dir=Path("/tmp/trt")))
    profiled = with_trt_options(chosen, trt_batch_profile("boxes", (4,), 8, MAX_DECODE_BATCH))
    trt = dict(profiled)["TensorrtExecutionProvider"]
    assert trt["trt_profile_min_shapes"] == "boxes:1x4"
    assert trt["trt_profile_opt_shapes"] == "boxes:8x4"
    assert trt["trt_profile_max_shapes"] == f"boxes:{MAX_DECODE_BATCH}x4"
    assert trt["trt_engine_cache_path"] == "/tmp/trt"  # the provider's own options stay
    assert dict(profiled)["CUDAExecutionProvider"] == {} and dict(profiled)["CPUExecutionProvider"] == {}
    assert "trt_profile_max_shapes" not in dict(chosen)["TensorrtExecutionProvider"]  # a copy, not in place


def test_each_model_and_precision_has_its_own_engine_cache():
    # onnxruntime keys engines on graph names, not weights: an updated model must not find the old engines.
    model = ModelConfig(trt_cache_dir=Path("/var/cache/glanceseg/trt"), fp16=True)
    old, new = engine_cache_dir(model, "ab" * 32), engine_cache_dir(model, "cd" * 32)
    assert old.parent == new.parent == Path("/var/cache/glanceseg/trt") and old != new
    assert engine_cache_dir(ModelConfig(trt_cache_dir=model.trt_cache_dir, fp16=False), "ab" * 32) != old


def test_the_runtime_asks_tensorrt_for_its_model_folder_and_the_decoder_profile(tensorrt_without_libnvinfer,
                                                                                 config, tmp_path):
    cfg = config.replace(model={"trt_cache_dir": tmp_path / "trt", "fp16": True})
    runtime = build_runtime(cfg)
    encoder, decoder = tensorrt_without_libnvinfer
    expected = engine_cache_dir(cfg.model, runtime.model_sha256)
    assert expected.is_dir() and expected.parent == tmp_path / "trt"
    assert encoder["trt_engine_cache_path"] == decoder["trt_engine_cache_path"] == str(expected)
    assert decoder["trt_profile_max_shapes"] == f"boxes:{MAX_DECODE_BATCH}x4" and "trt_profile_max_shapes" not in encoder
    assert runtime.variant == "fp32"  # TensorRT led, so auto took the fp32 files; they run on the CPU here
    emb = runtime.encode(np.zeros((256, 256, 3), np.uint8))
    assert runtime.decode(emb, np.array([[10, 10, 40, 40]], np.float32))[0].shape == (1, 256, 256)


def test_explicit_list_skips_what_the_build_lacks_and_keeps_cpu(caplog):
    with caplog.at_level(logging.WARNING):
        chosen = choose_providers("cuda", ["CPUExecutionProvider"], ModelConfig())
    assert [n for n, _ in chosen] == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider" in caplog.text
    with pytest.raises(ValueError, match="openvino"):
        choose_providers("openvino,cpu", ALL, ModelConfig())


def test_auto_variant_is_int8_on_the_cpu_and_fp32_on_a_gpu():
    cpu, cuda, trt = ("CPUExecutionProvider", {}), ("CUDAExecutionProvider", {}), ("TensorrtExecutionProvider", {})
    assert resolve_variant(ModelConfig(variant="auto"), [cpu]) == "int8"
    assert resolve_variant(ModelConfig(variant="auto"), [cuda, cpu]) == "fp32"
    assert resolve_variant(ModelConfig(variant="auto"), [trt, cuda, cpu]) == "fp32"
    assert resolve_variant(ModelConfig(variant="int8"), [cuda, cpu]) == "int8"  # an explicit choice stands


def test_a_provider_that_cannot_start_is_logged_and_skipped_without_printing(tensorrt_without_libnvinfer,
                                                                              capsys, caplog):
    # stdout carries `glanceseg bench --json`; onnxruntime's own fallback prints a banner there
    data = _relu_model()
    with caplog.at_level(logging.WARNING):
        sess = make_session(data, ModelConfig(providers="auto"), "probe")
    assert sess.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0].tolist() == [0.0, 2.0]
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert capsys.readouterr().out == ""
    assert "TensorrtExecutionProvider" in caplog.text and "probe" in caplog.text


def test_opening_a_session_leaves_other_threads_stdout_alone(monkeypatch, capsys):
    # The demo server's thread prints the login PINs while the engine opens its sessions;
    # a first fix swapped sys.stdout (process-wide) around session creation and swallowed them.
    import threading

    import onnxruntime as ort
    class PrintsMeanwhile(ort.InferenceSession):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            t = threading.Thread(target=print, args=("Log in as 'demo' with PIN 123456",))
            t.start()
            t.join()
            super().__init__(*args, **kwargs)

    data = _relu_model()
    monkeypatch.setattr(ort, "InferenceSession", PrintsMeanwhile)
    make_session(data, ModelConfig(providers="cpu"), "probe")
    assert "PIN 123456" in capsys.readouterr().out


def test_session_options_follow_config():
    import onnxruntime as ort

    so = session_options(ModelConfig(intra_op_threads=1, inter_op_threads=1, allow_spinning=False, cpu_arena=False))
    assert so.intra_op_num_threads == 1 and so.enable_cpu_mem_arena is False
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.enable_mem_pattern is False  # its planned block sat beside the arena: +280 MB (docs/performance.md)


def test_unknown_runtime_and_altered_model_are_refused(config, tmp_path):
    with pytest.raises(ModelError, match="runtime 'tflite'"):
        build_runtime(config.replace(model={"runtime": "tflite"}))
    folder = tmp_path / "models"
    folder.mkdir()
    manifest = json.loads((REPO_MODELS / "manifest.json").read_text())
    for item in manifest["files"]:
        (folder / item["file"]).symlink_to(REPO_MODELS / item["file"])
    manifest["files"][0]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    variant = manifest["files"][0]["variant"]
    with pytest.raises(ModelError, match=manifest["files"][0]["file"]):
        build_runtime(config.replace(model={"dir": str(folder), "variant": variant}))


def test_int8_model_gives_a_sensible_mask_for_a_real_ma(int8_runtime, idrid_photo):
    rgb, truth, centres, boxes = idrid_photo
    i = int(np.argmin(np.hypot(*(centres - [rgb.shape[1] / 2, rgb.shape[0] / 2]).T)))  # an MA near the centre
    x0, y0 = int(boxes[i, 0]) - 100, int(boxes[i, 1]) - 100
    tile = np.zeros((256, 256, 3), np.uint8)
    tile[:] = rgb[y0:y0 + 256, x0:x0 + 256]
    emb = int8_runtime.encode(tile)
    assert emb.shape == (1, 256, 64, 64) and emb.dtype == np.float32
    box = boxes[i] - [x0, y0, x0, y0]
    logits, iou = int8_runtime.decode(emb, box[None])
    assert logits.shape == (1, 256, 256) and iou.shape == (1,)
    mask = logits[0] > 0
    bx0, by0, bx1, by1 = box.astype(int)
    inside = mask[max(by0 - 4, 0):by1 + 5, max(bx0 - 4, 0):bx1 + 5].sum()
    assert 10 <= mask.sum() <= 4 * (bx1 - bx0) * (by1 - by0)
    assert inside >= 0.9 * mask.sum()  # the mask stays on the prompted spot
    cx, cy = centres[i] - [x0, y0]
    assert mask[int(cy) - 2:int(cy) + 3, int(cx) - 2:int(cx) + 3].any()  # and covers the MA


def test_batched_decode_equals_one_by_one(int8_runtime, idrid_photo):
    rgb = idrid_photo[0]
    tile = np.ascontiguousarray(rgb[1400:1656, 1400:1656])
    emb = int8_runtime.encode(tile)
    boxes = np.array([[20, 30, 40, 52], [120, 110, 138, 130], [200, 190, 230, 228]], np.float32)
    batched, iou_b = int8_runtime.decode(emb, boxes)
    for k in range(len(boxes)):
        single, iou_s = int8_runtime.decode(emb, boxes[k:k + 1])
        np.testing.assert_allclose(single[0], batched[k], atol=1e-3)
        np.testing.assert_allclose(iou_s[0], iou_b[k], atol=1e-4)
    empty, iou_e = int8_runtime.decode(emb, np.zeros((0, 4), np.float32))
    assert empty.shape == (0, 256, 256) and iou_e.shape == (0,)


def test_a_batch_longer_than_the_engine_profile_is_split_in_order(int8_runtime, idrid_photo):
    # A GPU engine is built for at most MAX_DECODE_BATCH prompts; longer batches go in slices.
    tile = np.ascontiguousarray(idrid_photo[0][1400:1656, 1400:1656])
    emb = int8_runtime.encode(tile)
    xy = np.random.default_rng(3).uniform(16, 240, (MAX_DECODE_BATCH + 5, 2))
    boxes = np.concatenate([xy - 9, xy + 9], axis=1).astype(np.float32)
    logits, iou = int8_runtime.decode(emb, boxes)
    assert logits.shape == (len(boxes), 256, 256) and iou.shape == (len(boxes),)
    for k in (0, MAX_DECODE_BATCH - 1, MAX_DECODE_BATCH, len(boxes) - 1):
        single, iou_s = int8_runtime.decode(emb, boxes[k:k + 1])
        np.testing.assert_allclose(single[0], logits[k], atol=1e-3)
        np.testing.assert_allclose(iou_s[0], iou[k], atol=1e-4)
