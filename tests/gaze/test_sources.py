"""The source registry and the settings derived from ``[gaze]``."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.errors import ConfigError
from appliance.gaze import SOURCE_BUILDERS, build_source, fixation_params, heatmap_params
from appliance.gaze.base import GazeSample, GazeSource
from appliance.gaze.csv_replay import write_gaze_csv
from appliance.gaze.pupil_export import ScreenMapping


def test_registry_names() -> None:
    assert set(SOURCE_BUILDERS) == {"pointer", "csv", "pupil_export", "simulated", "neon"}


def test_builds_each_offline_source(tmp_path: Path) -> None:
    config = load_config(environ={})
    pointer = build_source(config, image_size=(2000, 1000))
    assert pointer.kind == "pointer" and isinstance(pointer, GazeSource)
    pointer.close()

    csv_path = tmp_path / "g.csv"
    write_gaze_csv(csv_path, [GazeSample(0, 1.0, 2.0)])
    replay = build_source(config.replace(gaze={"source": "csv", "replay_path": str(csv_path)}),
                          image_size=(2000, 1000))
    sample = replay.receive(0)
    assert replay.kind == "csv" and sample.x == 1.0 and sample.px_per_deg > 0  # fitted-view default

    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "gaze.csv").write_text("timestamp [ns],gaze x [px],gaze y [px],worn\n5,1,1,1.0\n")
    export = build_source(config, kind="pupil_export", image_size=(2000, 1000), path=tmp_path / "export",
                          mapping=ScreenMapping.fixed([[1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    assert export.kind == "pupil_export" and export.receive(0).timestamp_ns == 5

    sim = build_source(config.replace(gaze={"source": "simulated", "simulated_seed": 3}), image_size=(600, 400))
    again = build_source(config, kind="simulated", image_size=(600, 400), seed=3)
    assert sim.kind == "simulated" and sim.receive(0) == again.receive(0)


def test_errors_name_the_problem() -> None:
    config = load_config(environ={})
    with pytest.raises(ConfigError, match="pointer"):
        build_source(config, kind="webcam")
    with pytest.raises(ConfigError, match="replay_path"):
        build_source(config, kind="csv")
    with pytest.raises(ConfigError, match="screen_mapping_path"):
        build_source(config, kind="pupil_export", image_size=(10, 10), path=Path("x"))
    with pytest.raises(ValueError, match="image_size"):
        build_source(config, kind="pointer")


def test_settings_follow_config_and_environment() -> None:
    config = load_config(environ={"GLANCESEG_GAZE_FIXATION_DISPERSION_DEG": "1.5",
                                  "GLANCESEG_GAZE_HEATMAP_SIGMA_DEG": "0.8",
                                  "GLANCESEG_GAZE_ROI_THRESHOLD_S": "0.1"})
    assert fixation_params(config).dispersion_deg == 1.5
    assert heatmap_params(config).sigma_deg == 0.8
    assert config.gaze.roi_threshold_s == 0.1
