"""Background model work at a lower CPU priority than the gaze path (Linux per-thread nice)."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from appliance.glance.priority import BACKGROUND_NICE, create_in_background, lower_this_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def _nice_of(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def _expected(base: int) -> int:
    return min(19, base + BACKGROUND_NICE)


def test_lowering_a_thread_leaves_the_others_alone():
    base = _nice_of(threading.get_native_id())
    seen = {}

    def work():
        lower_this_thread()
        seen["tid"] = _nice_of(threading.get_native_id())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["tid"] == _expected(base)
    assert _nice_of(threading.get_native_id()) == base  # the caller (the gaze path) is untouched


def test_threads_a_background_factory_starts_inherit_its_priority():
    base = _nice_of(threading.get_native_id())

    def factory():
        inner = {}
        t = threading.Thread(target=lambda: inner.update(nice=_nice_of(threading.get_native_id())))
        t.start()
        t.join()
        return inner["nice"]

    assert create_in_background(factory) == _expected(base)
    with pytest.raises(ZeroDivisionError):
        create_in_background(lambda: 1 / 0)


def test_onnxruntime_pool_threads_created_in_background_run_lowered():
    """The assumption the engine rests on: a session's intra-op threads inherit the nice
    value of the thread that created the session."""
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    base = _nice_of(threading.get_native_id())
    before = set(os.listdir("/proc/self/task"))

    def make():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 3
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    session = create_in_background(make)
    new = [int(t) for t in set(os.listdir("/proc/self/task")) - before]
    assert new, "onnxruntime started no pool threads"
    assert all(_nice_of(t) == _expected(base) for t in new)
    assert session.run(None, {"x": np.array([-1, 0, 1, 2], np.float32)})[0].tolist() == [0, 0, 1, 2]
