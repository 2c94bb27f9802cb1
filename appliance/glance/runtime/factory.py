"""``build_runtime(config)``: the configured SAM runtime from an explicit registry."""

from __future__ import annotations

import logging
from typing import Callable, Optional

from appliance.config import Config
from appliance.errors import ModelError
from appliance.glance.modelfiles import ModelFiles, load_for_config
from appliance.glance.runtime.base import SamRuntime

logger = logging.getLogger(__name__)


def _onnx(files: ModelFiles, config: Config) -> SamRuntime:
    from appliance.glance.runtime.onnx import OnnxSamRuntime

    return OnnxSamRuntime(files, config.model)


#: ``[model] runtime`` -> constructor (implementations import their libraries lazily)
RUNTIMES: dict[str, Callable[[ModelFiles, Config], SamRuntime]] = {"onnx": _onnx}


def build_runtime(config: Config, files: Optional[ModelFiles] = None) -> SamRuntime:
    """Build the configured SAM runtime.

    Parameters
    ----------
    config
        The appliance configuration (``[model]`` section; the data folder, where a model
        update may have installed ``models/current``).
    files
        An already loaded model folder; resolved from ``config`` when None.

    Raises
    ------
    ModelError
        If the runtime type is unknown or the model cannot be loaded.
    """
    kind = config.model.runtime
    if kind not in RUNTIMES:
        raise ModelError(f"Unknown [model] runtime {kind!r}; known: {', '.join(sorted(RUNTIMES))}.")
    files = files if files is not None else load_for_config(config)
    return RUNTIMES[kind](files, config)
