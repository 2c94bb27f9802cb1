"""``glanceseg status``: what the Device page and ``firmware_scripts/healthcheck`` read."""

from __future__ import annotations

from appliance.glance.runtime.onnx import engine_cache_dir
from appliance.errors import UpdateError
from appliance.ui.cli_ui import check_for_model_update, status_document


def test_status_counts_the_tensorrt_engines_of_the_active_model(tensorrt_without_libnvinfer, config, tmp_path):
    cfg = config.replace(model={"trt_cache_dir": tmp_path / "trt"})
    model = status_document(cfg)["model"]
    assert model["providers"][0] == "TensorrtExecutionProvider" and model["trt_engines"] == 0
    folder = engine_cache_dir(cfg.model, model["sha256"])
    folder.mkdir(parents=True)
    (folder / "TensorrtExecutionProvider_TRTKernel_graph_main_1_0_0_fp16.engine").write_bytes(b"x")
    (engine_cache_dir(cfg.model, "0" * 64)).mkdir()  # another model's engines do not count
    (engine_cache_dir(cfg.model, "0" * 64) / "old.engine").write_bytes(b"x")
    assert status_document(cfg)["model"]["trt_engines"] == 1


def test_status_has_no_engine_count_where_tensorrt_does_not_run(config):
    model = status_document(config)["model"]
    assert "TensorrtExecutionProvider" not in model["providers"] and model["trt_engines"] is None


def test_update_check_survives_unexpected_errors(config, caplog):
    """A raw OSError (e.g. a file deleted under an install) must not end the update thread."""
    def broken(_config):
        raise FileNotFoundError("gone")

    def refused(_config):
        raise UpdateError("Another install is running")

    check_for_model_update(config, broken)  # does not raise
    check_for_model_update(config, refused)
    assert "unexpectedly" in caplog.text and "Another install" in caplog.text
