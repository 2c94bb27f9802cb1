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


def test_status_reads_what_only_the_serving_process_knows(config, tmp_path):
    # A fresh `glanceseg status` cannot see the tracker's connection or the engine's model: the
    # serving process publishes them, and without it they are unknown rather than wrong.
    import json
    import time

    from appliance.ui.live_state import LIVE_STATE, read_live_state, write_live_state

    neon = config.replace(gaze={"source": "neon"})
    neon.data_dir.mkdir(parents=True, exist_ok=True)
    doc = status_document(neon)
    assert doc["app_running"] is False and doc["tracker"]["connected"] is None
    assert doc["model"]["sha256"] == doc["model"]["installed_sha256"]

    write_live_state(neon.data_dir, {"tracker": {"kind": "neon", "connected": True}, "model": {"sha256": "ab" * 32}})
    doc = status_document(neon)
    assert doc["app_running"] is True and doc["tracker"]["connected"] is True
    assert doc["model"]["sha256"] == "ab" * 32 and doc["model"]["installed_sha256"] != "ab" * 32

    path = neon.data_dir / LIVE_STATE
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, "updated_unix": time.time() - 3600}))  # a writer that hung
    assert read_live_state(neon.data_dir) is None
    path.write_text(json.dumps({**state, "pid": 999_999_999}))  # a writer that is gone
    assert read_live_state(neon.data_dir) is None and read_live_state(neon.data_dir.parent) is None


def test_a_fresh_data_folder_and_the_embedding_cache_are_owner_only(config, tmp_path):
    # The data folder holds patient data; the update stores made it first with the default
    # umask (0755). Embeddings are derived from patient photographs.
    from appliance.glance.spill import EmbeddingSpill
    from appliance.ui.cli_ui import appliance_services

    data = tmp_path / "fresh" / "data"
    services = appliance_services(config.replace(data={"dir": str(data)}))
    try:
        assert data.stat().st_mode & 0o777 == 0o700
    finally:
        services.close()
        services.store.close()
    spill = EmbeddingSpill(tmp_path / "cache" / "embeddings", capacity=1)
    try:
        assert (tmp_path / "cache" / "embeddings").stat().st_mode & 0o777 == 0o700
    finally:
        spill.close()
