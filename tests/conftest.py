"""Cross-area fixtures: a configuration on a temporary data folder and the shared data set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent
IDRID_DIR = REPO.parent / "shared" / "data" / "idrid-ma"
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip a test whose service or binary is missing, or fail when CI requires it."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The default configuration with its data folder in a temporary directory."""
    return load_config(environ={}).replace(data={"dir": tmp_path / "data"})


@pytest.fixture(scope="session")
def idrid_dir() -> Path:
    """The shared IDRiD MA data set (skipped, or failed in CI, when absent)."""
    if not (IDRID_DIR / "index.csv").exists():
        skip_or_fail(f"the shared data set is not at {IDRID_DIR}")
    return IDRID_DIR


@pytest.fixture
def tensorrt_without_libnvinfer(monkeypatch):
    """onnxruntime as onnxruntime-gpu 1.31.1 behaved on an H200 without TensorRT's libraries
    (docs/gpu-bench): it lists the TensorRT provider, and a session asked for it either
    prints an error banner to stdout and falls back (the default) or, with
    ``enable_fallback=0``, raises. The GPU cannot exist here; the CPU stands in for the rest.
    Returns the list of TensorRT provider options the sessions asked for, in order."""
    import onnxruntime as ort

    real_available = ort.get_available_providers()
    asked: list[dict] = []

    class WithoutLibnvinfer(ort.InferenceSession):  # type: ignore[misc, valid-type]
        def __init__(self, data, sess_options=None, providers=None, provider_options=None, **kwargs):
            names = list(providers or [])
            options = list(provider_options or [{} for _ in names])
            if "TensorrtExecutionProvider" in names:
                asked.append(dict(options[names.index("TensorrtExecutionProvider")]))
                if int(kwargs.get("enable_fallback", 1)) == 0:
                    raise RuntimeError("Please install TensorRT libraries as mentioned in the GPU requirements page")
                print("*************** EP Error ***************")
                print("Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider'] and retrying.")
                keep = [i for i, n in enumerate(names) if n != "TensorrtExecutionProvider"]
                names, options = [names[i] for i in keep], [options[i] for i in keep]
            super().__init__(data, sess_options=sess_options, providers=names, provider_options=options, **kwargs)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", *real_available])
    monkeypatch.setattr(ort, "InferenceSession", WithoutLibnvinfer)
    return asked
